"""One table of an embedded DuckDB database file, written in one transaction."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import duckdb
import fsspec
import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

WriteMode = Literal["append", "replace", "replace_matching"]
WRITE_MODES = ("append", "replace", "replace_matching")


def _quoted(name: str) -> str:
    """An SQL identifier in double quotes (inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


class DuckDBTableDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A table in a DuckDB database file; ``save`` writes a DataFrame into it.

    ``write_mode`` says what a save does to rows already there:

    - ``append``: keeps them all and adds the new rows;
    - ``replace``: the table holds only the new rows afterwards;
    - ``replace_matching``: removes the rows whose ``match_columns`` values equal
      those of any new row, then adds the new rows (for scores: a rerun with the same
      model version replaces that version's rows, other versions stay).

    The table is created from the first frame's columns and types; later frames are
    inserted by column name. Each save is one transaction: a failed save leaves the
    table as it was. A local file is written in place (DuckDB allows one writing
    process at a time and refuses a second one while the first holds the file). A
    remote ``filepath`` (``s3://...``) is copied to a temporary local file, changed
    there and uploaded as one object; two writers of the same remote file at the same
    time would lose one of the two saves.

    Rejected: an unknown ``write_mode``; ``replace_matching`` without
    ``match_columns``; a frame without the ``match_columns`` or with columns the table
    lacks (``DatasetError`` naming the file, the table and the columns).

    Example catalog entry:

    .. code-block:: yaml

        scores_table:
          type: tsa_kedro.datasets.duckdb_table.DuckDBTableDataset
          filepath: ${globals:data_root}/08_reporting/scores.duckdb
          table: scores
          write_mode: replace_matching
          match_columns: [model_name, model_version]
    """

    def __init__(  # noqa: PLR0913 - catalog keywords
        self,
        *,
        filepath: str,
        table: str,
        write_mode: WriteMode = "append",
        match_columns: list[str] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Name the database file and table, and what a save does to older rows.

        Raises:
            DatasetError: ``write_mode`` is unknown, or ``replace_matching`` has no
                ``match_columns``.
        """
        if write_mode not in WRITE_MODES:
            raise DatasetError(
                f"DuckDB table {table} in {filepath}: write_mode {write_mode!r} is not "
                f"one of {', '.join(WRITE_MODES)}"
            )
        if write_mode == "replace_matching" and not match_columns:
            raise DatasetError(
                f"DuckDB table {table} in {filepath}: write_mode replace_matching "
                "needs match_columns"
            )
        self._filepath = filepath
        self._table = table
        self._write_mode = write_mode
        self._match_columns = list(match_columns or [])
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._path = path
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "table": self._table,
            "write_mode": self._write_mode,
            "match_columns": self._match_columns,
        }

    @property
    def _local(self) -> bool:
        return self._protocol == "file"

    def _exists(self) -> bool:
        if not self._fs.exists(self._path):
            return False
        with self._opened(read_only=True) as con:
            return self._has_table(con)

    def _has_table(self, con: duckdb.DuckDBPyConnection) -> bool:
        found = con.execute(
            "select count(*) from information_schema.tables where table_name = ?",
            [self._table],
        ).fetchone()
        return bool(found and found[0])

    def _opened(self, read_only: bool) -> _Connection:
        return _Connection(self, read_only)

    def load(self) -> pd.DataFrame:
        """The whole table.

        Raises:
            DatasetError: The file or the table does not exist.
        """
        if not self._fs.exists(self._path):
            raise DatasetError(f"DuckDB database {self._filepath} does not exist")
        with self._opened(read_only=True) as con:
            if not self._has_table(con):
                raise DatasetError(
                    f"DuckDB database {self._filepath} has no table {self._table}"
                )
            return con.execute(f"select * from {_quoted(self._table)}").df()

    def save(self, data: pd.DataFrame) -> None:
        """Write ``data`` into the table in one transaction (see the class doc).

        Raises:
            DatasetError: ``data`` lacks a match column or holds a column the table
                lacks, or DuckDB refuses the write; the table is unchanged.
        """
        missing = [c for c in self._match_columns if c not in data.columns]
        if missing:
            raise DatasetError(
                f"DuckDB table {self._table} in {self._filepath}: the frame lacks the "
                f"match column(s) {missing}"
            )
        if self._local:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        with self._opened(read_only=False) as con:
            con.register("incoming", data)
            table = _quoted(self._table)
            try:
                con.execute("begin transaction")
                if not self._has_table(con):
                    con.execute(
                        f"create table {table} as select * from incoming limit 0"
                    )
                else:
                    self._check_columns(con, data)
                if self._write_mode == "replace":
                    con.execute(f"delete from {table}")
                elif self._write_mode == "replace_matching":
                    keys = ", ".join(_quoted(c) for c in self._match_columns)
                    con.execute(
                        f"delete from {table} where ({keys}) in "
                        f"(select distinct {keys} from incoming)"
                    )
                con.execute(f"insert into {table} by name select * from incoming")
                con.execute("commit")
            except (duckdb.Error, DatasetError) as error:
                con.execute("rollback")
                if isinstance(error, DatasetError):
                    raise
                raise DatasetError(
                    f"cannot write DuckDB table {self._table} in {self._filepath}: "
                    f"{error}"
                ) from error
            finally:
                con.unregister("incoming")

    def _check_columns(
        self, con: duckdb.DuckDBPyConnection, data: pd.DataFrame
    ) -> None:
        columns = {
            row[0]
            for row in con.execute(
                "select column_name from information_schema.columns "
                "where table_name = ?",
                [self._table],
            ).fetchall()
        }
        extra = [c for c in data.columns if c not in columns]
        if extra:
            raise DatasetError(
                f"DuckDB table {self._table} in {self._filepath} has no column(s) "
                f"{extra}; its columns: {sorted(columns)}"
            )


class _Connection:
    """A DuckDB connection to a dataset's file: the file itself when local, else a
    temporary local copy, uploaded on a clean exit of a writing connection."""

    def __init__(self, dataset: DuckDBTableDataset, read_only: bool) -> None:
        self._dataset = dataset
        self._read_only = read_only
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._local_path = ""

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        ds = self._dataset
        if ds._local:
            self._local_path = ds._path
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="duckdb-")
            self._local_path = os.path.join(
                self._tmp.name, PurePosixPath(ds._path).name
            )
            if ds._fs.exists(ds._path):
                ds._fs.get(ds._path, self._local_path)
        try:
            self._con = duckdb.connect(self._local_path, read_only=self._read_only)
        except duckdb.Error as error:
            self._cleanup()
            raise DatasetError(
                f"cannot open DuckDB database {ds._filepath}: {error}"
            ) from error
        return self._con

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if self._con is not None:
                self._con.close()
            ds = self._dataset
            if kind is None and not self._read_only and not ds._local:
                ds._fs.put(self._local_path, ds._path)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
