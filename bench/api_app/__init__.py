"""bench/api.py's server: the project's settings and URLs plus the DRF ModelSerializer baseline endpoints."""
