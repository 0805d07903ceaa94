"""Dashboard pages (login required): the top layer, reading all three apps through their selectors."""
