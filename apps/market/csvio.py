"""Candle and trade CSV files (pure: no Django).

Files carry integer ms UTC timestamps and a header line. Candle files say nothing about their time label, so the caller
passes it (`time_label`): frames returned here always use CLOSE-time labels (see timeframes.py).

Errors are `CsvFormatError` with one line naming the file, the line number (1-based, the header is line 1, so data row
k is line k + 1), the field and the rule. The happy path is one `pandas.read_csv` with explicit dtypes; only when that
fails is the file re-read as text to locate the first bad value for the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from apps.common.errors import ApplicationError
from apps.market.timeframes import TimeLabel, from_close_label, timeframe_ms, to_close_label
from apps.market.validation import CANDLE_COLUMNS

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
TRADE_COLUMNS: tuple[str, ...] = ("timestamp", "price", "amount")


class CsvFormatError(ApplicationError):
    """A CSV file that cannot be read as candles/trades; the message names file, line, field and rule."""


def _fail(path: Path, line: int | None, field: str | None, rule: str) -> CsvFormatError:
    where = f"{path}"
    if line is not None:
        where += f", line {line}"
    if field is not None:
        where += f", field {field!r}"
    return CsvFormatError(f"{where}: {rule}")


def _header(path: Path) -> list[str]:
    """Column names of the first line (also proves the file is readable, gz included)."""
    try:
        head = pd.read_csv(path, nrows=0, compression="infer")
    except FileNotFoundError:
        raise _fail(path, None, None, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, None, None, "is a directory, not a CSV file") from None
    except pd.errors.EmptyDataError:
        raise _fail(path, 1, None, "empty file: expected a header line") from None
    except (OSError, UnicodeDecodeError, EOFError, pd.errors.ParserError) as exc:
        raise _fail(path, None, None, f"cannot read as CSV ({_one_line(exc)})") from None
    return [str(c).strip() for c in head.columns]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _require(path: Path, columns: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise _fail(
            path, 1, missing[0], f"missing column (header has {', '.join(columns) or 'nothing'}; "
            f"required {', '.join(required)})"
        )


def _read(path: Path, dtypes: dict[str, object]) -> pd.DataFrame:
    """Fast path: one C-engine read with explicit dtypes for the wanted columns. Raises ValueError on a bad value.

    All columns are parsed (no `usecols`): with `usecols` pandas silently drops the surplus fields of a row that has
    too many (an unquoted "1,5"), and we want that to be an error naming the line."""
    try:
        return pd.read_csv(
            path,
            dtype=dtypes,
            compression="infer",
            skip_blank_lines=True,
            skipinitialspace=True,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        raise _fail(path, None, None, f"malformed CSV ({_one_line(exc)})") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise _fail(path, None, None, f"cannot read ({_one_line(exc)})") from None


def _read_text(path: Path, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Slow path for error messages and odd-but-valid files: all wanted columns as text, plus each row's line number."""
    try:
        raw = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            compression="infer",
            skip_blank_lines=False,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        raise _fail(path, None, None, f"malformed CSV ({_one_line(exc)})") from None
    lines = np.arange(2, len(raw) + 2)
    blank = np.ones(len(raw), dtype=bool)
    for col in columns:
        blank &= (raw[col].str.strip() == "").to_numpy()
    # A wholly blank line is skipped (like the fast path does), but line numbers stay those of the file.
    return raw.loc[~blank, columns].reset_index(drop=True), lines[~blank]


def _parse_timestamps(path: Path, text: pd.Series, lines: np.ndarray, field: str = "timestamp") -> np.ndarray:
    stripped = text.str.strip()
    values = pd.to_numeric(stripped, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    exact = pd.to_numeric(stripped, errors="coerce", downcast=None)
    bad = ~np.isfinite(values) | (np.floor(values) != values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = stripped.iloc[i]
        rule = "empty value" if value == "" else f"not an integer ms timestamp: {value!r}"
        raise _fail(path, int(lines[i]), field, rule)
    if exact.dtype.kind in "iu":
        return exact.to_numpy(dtype=np.int64)
    # Integral floats such as "1679004900000.0": exact for any ms timestamp below 2**53.
    return values.astype(np.int64)


def _parse_floats(path: Path, text: pd.Series, lines: np.ndarray, field: str) -> np.ndarray:
    """Numbers; an empty field is NaN (validation rejects that row, the rest of the file is kept)."""
    stripped = text.str.strip()
    values = pd.to_numeric(stripped, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    empty = (stripped == "").to_numpy() | stripped.str.lower().isin(["nan", "na", "null"]).to_numpy()
    bad = np.isnan(values) & ~empty
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(path, int(lines[i]), field, f"not a number: {stripped.iloc[i]!r}")
    return values


def _check_label(timeframe: str, time_label: str) -> None:
    timeframe_ms(timeframe)  # TimeframeError for an unknown timeframe
    if time_label not in ("open", "close"):
        raise ValueError(f"time label must be 'open' or 'close', got {time_label!r}")


def read_candle_csv(path: str | os.PathLike[str], *, timeframe: str, time_label: TimeLabel) -> pd.DataFrame:
    """Read a candle CSV into a candle frame with CLOSE-time labels.

    Rows keep the file's order (validation, not the reader, rules on order/duplicates/grid); extra columns are
    ignored; empty price/volume fields become NaN for validation to reject. `.gz` files are read transparently.
    """
    _check_label(timeframe, time_label)
    path = Path(path)
    columns = _header(path)
    _require(path, columns, CANDLE_COLUMNS)
    dtypes: dict[str, object] = {"timestamp": np.int64, **{c: np.float64 for c in PRICE_COLUMNS}}
    try:
        df = _read(path, dtypes)
        ts = df["timestamp"].to_numpy(dtype=np.int64)
        data = {c: df[c].to_numpy(dtype=np.float64) for c in PRICE_COLUMNS}
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, CsvFormatError):
            raise
        raw, lines = _read_text(path, list(CANDLE_COLUMNS))
        ts = _parse_timestamps(path, raw["timestamp"], lines)
        data = {c: _parse_floats(path, raw[c], lines, c) for c in PRICE_COLUMNS}
    out = pd.DataFrame({"timestamp": np.asarray(to_close_label(ts, timeframe, time_label), dtype=np.int64), **data})
    return out


def write_candle_csv(
    df: pd.DataFrame, path: str | os.PathLike[str], *, timeframe: str, time_label: TimeLabel = "close"
) -> int:
    """Write a candle frame (close labels) as CSV with the given label; a `filled` column is kept when present.

    Floats are written in shortest round-trip form, so reading the file back gives the same values. The file is
    written next to the target and renamed into place, so a reader never sees half a file. Returns rows written.
    """
    _check_label(timeframe, time_label)
    path = Path(path)
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"candle frame lacks column {missing[0]!r} (needs {', '.join(CANDLE_COLUMNS)})")
    columns = list(CANDLE_COLUMNS) + (["filled"] if "filled" in df.columns else [])
    out = df.loc[:, columns].copy()
    out["timestamp"] = from_close_label(out["timestamp"].to_numpy(dtype=np.int64), timeframe, time_label)
    if "filled" in out.columns:
        out["filled"] = out["filled"].astype(bool)
    compression = "gzip" if path.suffix == ".gz" else None
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        out.to_csv(tmp, index=False, compression=compression, lineterminator="\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(out)


def read_trades_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a trades CSV (`timestamp,price,amount[,side,id,...]`) into a trades frame in file order.

    Columns: timestamp int64 (ms UTC), price, amount float64, side str ("" when absent), trade_id str (the file's `id`
    column, else "<timestamp>-<n>" with n the 1-based data row, so re-reading the same file gives the same ids).
    """
    path = Path(path)
    columns = _header(path)
    _require(path, columns, TRADE_COLUMNS)
    has_side = "side" in columns
    has_id = "id" in columns
    dtypes: dict[str, object] = {"timestamp": np.int64, "price": np.float64, "amount": np.float64}
    if has_side:
        dtypes["side"] = str
    if has_id:
        dtypes["id"] = str
    try:
        df = _read(path, dtypes)
        ts = df["timestamp"].to_numpy(dtype=np.int64)
        price = df["price"].to_numpy(dtype=np.float64)
        amount = df["amount"].to_numpy(dtype=np.float64)
        lines = None
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, CsvFormatError):
            raise
        df, lines = _read_text(path, list(dtypes))
        ts = _parse_timestamps(path, df["timestamp"], lines)
        price = _parse_floats(path, df["price"], lines, "price")
        amount = _parse_floats(path, df["amount"], lines, "amount")
    for field, values in (("price", price), ("amount", amount)):
        bad = np.isnan(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            line = int(lines[i]) if lines is not None else _line_of(path, i)
            raise _fail(path, line, field, "missing value (empty or NA; a trade needs a price and an amount)")
    if has_side:
        side = df["side"].fillna("").astype(str).str.strip().to_numpy(dtype=object)
    else:
        side = np.full(len(ts), "", dtype=object)
    if has_id:
        trade_id = df["id"].fillna("").astype(str).str.strip().to_numpy(dtype=object)
    else:
        # Same rule as services.ingest_trades for frames without ids: timestamp and 1-based data row position.
        trade_id = np.array([f"{t}-{n}" for n, t in enumerate(ts.tolist(), start=1)], dtype=object)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "price": price,
            "amount": amount,
            "side": pd.array(side, dtype="str"),
            "trade_id": pd.array(trade_id, dtype="str"),
        }
    )


def _line_of(path: Path, row: int) -> int:
    """Line number of data row `row` (0-based) after the fast path skipped blank lines: recount from the text."""
    _, lines = _read_text(path, list(TRADE_COLUMNS))
    return int(lines[row])
