"""Read a table from CSV, Parquet, a DuckDB table or query, or a MovieLens file, as polars.

Every column is read as text from delimited files so that IDs such as "007" survive; the
callers convert the columns they need with errors that name the file, column and row.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from recsys import duck
from recsys.errors import DataError, MissingInputError
from recsys.redact import redact

# Headerless MovieLens layouts: file name -> (separator, column names).
MOVIELENS_LAYOUTS: dict[str, tuple[str, list[str]]] = {
    "u.data": ("\t", ["user_id", "item_id", "rating", "timestamp"]),
    "ratings.dat": ("::", ["user_id", "item_id", "rating", "timestamp"]),
    "u.user": ("|", ["user_id", "age", "gender", "occupation", "zip_code"]),
    "users.dat": ("::", ["user_id", "gender", "age", "occupation", "zip_code"]),
    "movies.dat": ("::", ["item_id", "title", "genres"]),
}
U_ITEM_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
# GroupLens ships the MovieLens files in Latin-1 (titles such as "Misérables").
MOVIELENS_ENCODING = "latin-1"
DUPLICATE_SUFFIX = re.compile(r"^(.*)_duplicated_\d+$")


@dataclass(frozen=True)
class TableSource:
    """Where a table comes from. `kind` is csv, parquet, duckdb, or a MovieLens file name."""

    spec: str
    kind: str
    path: Path
    table: str = ""  # for duckdb: a table name or a SELECT query

    @property
    def label(self) -> str:
        """How messages, logs and runs.source name it: credentials in it are hidden."""
        return redact(f"{self.path}::{self.table}" if self.kind == "duckdb" else str(self.path))


def parse_source(spec: str) -> TableSource:
    """Detect the format from the path: `duckdb:PATH::TABLE`, *.parquet, *.csv, MovieLens names.

    A directory holding a MovieLens ratings file (u.data, ratings.dat, ratings.csv) means that
    file, so `--interactions ml-100k/` works.
    """
    if spec.startswith("duckdb:"):
        path, sep, table = spec[len("duckdb:") :].partition("::")
        if not sep or not table.strip():
            raise DataError(
                f"{redact(spec)}: expected duckdb:PATH::TABLE (or duckdb:PATH::SELECT ...)"
            )
        return TableSource(spec, "duckdb", Path(path), table.strip())
    path = Path(spec)
    if path.is_dir():
        for name in ("u.data", "ratings.dat", "ratings.csv"):
            if (path / name).exists():
                return parse_source(str(path / name))
        raise MissingInputError(f"{path}: directory holds no u.data, ratings.dat or ratings.csv")
    name = path.name.lower()
    if name in MOVIELENS_LAYOUTS or name == "u.item":
        return TableSource(spec, name, path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return TableSource(spec, "parquet", path)
    if suffix in (".csv", ".tsv", ".txt", ".data", ".dat") or suffix == "":
        return TableSource(spec, "csv", path)
    raise DataError(
        f"{path}: unknown file type '{suffix}' (expected .csv, .tsv, .parquet, a MovieLens "
        "file such as u.data, or duckdb:PATH::TABLE)"
    )


def read_table(spec: str, delimiter: str = "") -> tuple[pl.DataFrame, TableSource]:
    """Read `spec` fully into polars; text formats come back as all-String columns."""
    source = parse_source(spec)
    if not source.path.exists():
        raise MissingInputError(f"{source.path}: file not found")
    if source.path.is_file() and not _readable(source.path):
        raise MissingInputError(f"{source.path}: file is not readable (check permissions)")
    if source.kind == "duckdb":
        frame = _read_duckdb(source)
    elif source.kind == "parquet":
        try:
            frame = pl.read_parquet(source.path)
        except Exception as exc:  # polars raises several types for a corrupt file
            raise DataError(
                f"{source.path}: not a readable Parquet file ({_first_line(exc)})"
            ) from None
    elif source.kind == "u.item":
        frame = _read_u_item(source.path)
    elif source.kind in MOVIELENS_LAYOUTS:
        sep, names = MOVIELENS_LAYOUTS[source.kind]
        frame = _read_delimited(source.path, sep, names, MOVIELENS_ENCODING)
    else:
        sep = delimiter or ("\t" if source.path.suffix.lower() == ".tsv" else _sniff(source.path))
        frame = _read_delimited(source.path, sep, None)
    _check_header(frame, source.label)
    return frame, source


def _readable(path: Path) -> bool:
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


def _sniff(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.readline().decode("utf-8", errors="replace")
    counts = {sep: head.count(sep) for sep in (",", "\t", ";", "|")}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else ","


def _read_delimited(
    path: Path, sep: str, names: list[str] | None, encoding: str = "utf-8"
) -> pl.DataFrame:
    """Every column as text. UTF-8 files are checked first, so that an ID in another encoding
    is refused with its line instead of merged with others as U+FFFD; the MovieLens layouts
    are Latin-1, as GroupLens ships them."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (expected a header and rows)")
    if encoding == "utf-8":
        check_utf8(path)
    try:
        if len(sep) > 1 or encoding != "utf-8":  # polars takes one-byte separators and UTF-8
            text = path.read_text(encoding=encoding).replace(sep, "\x1f")
            return pl.read_csv(
                text.encode(), separator="\x1f", has_header=names is None, new_columns=names,
                infer_schema=False, quote_char=None,
            )  # fmt: skip
        return pl.read_csv(
            path, separator=sep, has_header=names is None, new_columns=names,
            infer_schema=False, quote_char=None if names else '"', encoding="utf8",
        )  # fmt: skip
    except pl.exceptions.NoDataError:
        raise DataError(f"{path}: file is empty (expected a header and rows)") from None
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError) as exc:
        raise DataError(f"{path}: cannot parse as delimited text ({_first_line(exc)})") from None


def check_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8, naming the first line that is not (read in chunks:
    the check costs one pass over the file, not a copy of it in memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # exc.object: this chunk after <= 3 held bytes
                line += exc.object[: exc.start].count(b"\n")
                raise DataError(
                    f"{path}: line {line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                    "save the file as UTF-8, e.g. with iconv -f latin1 -t utf-8"
                ) from None
            if not chunk:
                return
            line += chunk.count(b"\n")


def _read_u_item(path: Path) -> pl.DataFrame:
    """MovieLens-100K u.item: id|title|release|video_release|url|19 genre flags."""
    names = ["item_id", "title", "release_date", "video_release_date", "url", *U_ITEM_GENRES]
    raw = _read_delimited(path, "|", names, MOVIELENS_ENCODING)
    flags = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in U_ITEM_GENRES]
    return raw.select(
        "item_id",
        pl.col("title").str.replace(r"\s*\(\d{4}\)$", ""),
        pl.col("release_date").str.slice(-4).alias("release_year"),
        pl.concat_list(flags).list.drop_nulls().list.join("|").alias("genres"),
    )


def _read_duckdb(source: TableSource) -> pl.DataFrame:
    query = source.table
    if not re.match(r"(?is)^\s*(select|with|from)\b", query):
        query = f"select * from {_quote_ident(query)}"
    try:
        with duck.connect(source.path, read_only=True) as con:
            return con.sql(query).pl()
    except duckdb.CatalogException:
        raise DataError(f"{source.label}: table or view does not exist in {source.path}") from None
    except duckdb.IOException as exc:
        raise MissingInputError(
            redact(f"{source.path}: cannot open DuckDB file ({_first_line(exc)})")
        ) from None
    except duckdb.Error as exc:
        raise DataError(f"{source.label}: query failed ({redact(_first_line(exc))})") from None


def _quote_ident(name: str) -> str:
    parts = name.split(".")
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _check_header(frame: pl.DataFrame, label: str) -> None:
    for column in frame.columns:
        match = DUPLICATE_SUFFIX.match(column)
        if match:
            raise DataError(f"{label}: column '{match.group(1)}' appears twice in the header")
    if frame.width == 0:
        raise DataError(f"{label}: no columns found")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
