"""Declared (manual) figures: baseline or post indicators a firm declares instead of measuring them.

A firm with no connectivity before the retrofit has no measured baseline. It fills in a template
(CSV or Excel, `write_template`) with the figures from its own records — production reports,
asset register — and `edgeproof baseline import` loads the file (`load_declared_file`: every bad
cell is reported with file, row and column; a file with any error is not stored at all) into
tables of their own in the ingest's store, SQLite or PostgreSQL (`DeclaredStore`). Each import keeps who declared
the figures and when, who imported them, the file's name and SHA-256. Imports are append-only:
`withdraw` marks one as withdrawn and keeps it. These figures are labelled declared (申报/导入)
wherever they are shown, never mixed with measured ones (docs/projects.md).
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cloud_ingest.bilingual import header
from cloud_ingest.dialect import Connection, StoreTarget, connect, create_tables, has_table, mask
from edgeproof.configfile import located_error

IndicatorKey = Literal[
    "networking_rate",
    "digitalisation_rate",
    "nc_rate_key_processes",
    "oee",
    "availability",
    "performance",
    "quality",
    "pass_rate",
    "capacity_utilisation",
    "energy_per_good_part",
]
WindowKey = Literal["baseline", "post"]

RATIO_TOLERANCE = 1e-6  # |value − numerator/denominator| allowed
MAX_PROBLEMS = 50  # problems listed for one file; the rest are counted
CSV_ENCODING = "utf-8-sig"  # as the record's CSV files: the BOM tells Excel the file is UTF-8
DATA_SHEET = "申报数据 data"
INSTRUCTIONS_SHEET = "说明 Instructions"
_DATA_SHEET_NAMES = {"申报数据", "data", "申报数据 data"}  # compared case-folded


@dataclass(frozen=True)
class IndicatorInfo:
    zh: str
    en: str
    unit: str  # "ratio" (a fraction 0..1) or the unit of a quantity
    aliases: tuple[str, ...] = ()  # further names accepted in the indicator column


INDICATORS: dict[str, IndicatorInfo] = {
    "networking_rate": IndicatorInfo("设备联网率", "networking rate of production equipment", "ratio"),
    "digitalisation_rate": IndicatorInfo("设备数字化率", "digitalisation rate of production equipment", "ratio"),
    "nc_rate_key_processes": IndicatorInfo("关键工序数控化率", "NC rate of key processes", "ratio"),
    "oee": IndicatorInfo(
        "设备综合效率",
        "OEE, overall equipment effectiveness",
        "ratio",
        ("OEE", "设备综合效率/OEE", "设备综合效率 OEE", "设备综合效率(OEE)"),
    ),
    "availability": IndicatorInfo("可用率", "availability", "ratio"),
    "performance": IndicatorInfo("性能率", "performance", "ratio"),
    "quality": IndicatorInfo("合格率", "quality", "ratio"),
    "pass_rate": IndicatorInfo("月度平均产品合格率", "monthly average product pass rate", "ratio"),
    "capacity_utilisation": IndicatorInfo("产能利用率", "capacity utilisation", "ratio"),
    "energy_per_good_part": IndicatorInfo(
        "单件能耗", "energy per good part", "kWh/part", ("单件能耗(每合格件)", "单件能耗 kWh")
    ),
}
WINDOWS: dict[str, tuple[str, ...]] = {  # key -> Chinese names accepted
    "baseline": ("改造前", "基线"),
    "post": ("改造后",),
}


@dataclass(frozen=True)
class ColumnInfo:
    zh: str
    required: bool
    help_zh: str
    help_en: str


COLUMNS: dict[str, ColumnInfo] = {
    "window": ColumnInfo(
        "窗口",
        True,
        "必填。改造前（或 基线）、改造后；也可写 baseline、post。",
        "Required. baseline (改造前) or post (改造后).",
    ),
    "indicator": ColumnInfo(
        "指标",
        True,
        "必填。见下方指标表，写中文名称或英文键均可。",
        "Required. See the indicators below: Chinese name or key.",
    ),
    "machine_id": ColumnInfo(
        "设备",
        False,
        "选填。设备编号，与资产台账一致；留空表示全厂（整个厂区）。",
        "Optional. Machine id as in the asset register; empty = the whole plant / site.",
    ),
    "value": ColumnInfo(
        "数值",
        False,
        "比率写 85% 或 0.85，须在 0–100% 之间；单件能耗写 kWh/合格件，不小于 0。"
        "填了分子和分母时可留空，按 分子÷分母 计算。",
        "Ratios as 85% or 0.85, within 0–100 %; energy per good part in kWh per part, ≥ 0. "
        "May be empty when numerator and denominator are given: it is then numerator ÷ denominator.",
    ),
    "numerator": ColumnInfo(
        "分子",
        False,
        "选填，如联网设备台数。与分母都填时，数值须等于 分子÷分母（误差不超过 0.000001）；比率的分子不得大于分母。",
        "Optional, e.g. networked machines. With the denominator, value must equal numerator ÷ denominator "
        "(within 1e-6); for a ratio the numerator may not exceed the denominator.",
    ),
    "denominator": ColumnInfo(
        "分母", False, "选填，如生产设备总数，须大于 0。", "Optional, e.g. all production equipment; above 0."
    ),
    "period_start": ColumnInfo(
        "期间开始",
        False,
        "选填，与期间结束一起填写：数据所覆盖期间的第一天，如 2024-08-01。",
        "Optional, with period_end: the first day of the period the figure covers, e.g. 2024-08-01.",
    ),
    "period_end": ColumnInfo(
        "期间结束",
        False,
        "选填：期间的最后一天（含当天），不早于期间开始，如 2024-08-31。",
        "Optional: the last day of the period (inclusive), not before period_start, e.g. 2024-08-31.",
    ),
    "source_document": ColumnInfo(
        "依据文件",
        False,
        "选填：数据出处，如“2024年8月生产日报表”。",
        "Optional: where the figure comes from, e.g. 2024年8月生产日报表 (production reports of August 2024).",
    ),
    "note": ColumnInfo("备注", False, "选填。", "Optional remarks."),
}

EXAMPLE_ROWS: list[tuple[object, ...]] = [  # shown in the instructions sheet only, never in the data sheet
    ("改造前", "设备联网率", "", "", 3, 10, "2024-08-01", "2024-08-31", "2024年8月设备台账", "仅3台设备可联网"),
    ("改造前", "设备综合效率", "CNC-01", "62.5%", "", "", "2024-08-01", "2024-08-31", "2024年8月生产日报表", ""),
    ("baseline", "energy_per_good_part", "PRESS-02", 1.35, "", "", "", "", "电费台账", "kWh/件"),
]


def _heading(key: str) -> str:
    """The column's bilingual heading, as in the record's CSV files ("数值 value")."""
    return header(key, COLUMNS[key].zh)


def _norm(text: str) -> str:
    """Text for matching: NFKC (full-width to half-width), case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _lookup(names: Mapping[str, Iterable[str]]) -> dict[str, str]:
    return {_norm(name): key for key, aliases in names.items() for name in aliases}


_INDICATOR_NAMES = _lookup({k: (k, i.zh, f"{i.zh} {k}", *i.aliases) for k, i in INDICATORS.items()})
_WINDOW_NAMES = _lookup({k: (k, *zh, *(f"{z} {k}" for z in zh)) for k, zh in WINDOWS.items()})


def is_ratio(indicator: str) -> bool:
    return INDICATORS[indicator].unit == "ratio"


# -- the model ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


Text = Annotated[str, Field(min_length=1)]


def _num(value: float) -> str:
    return format(value, ".10g")


def _figure_problems(values: Mapping[str, Any], shown: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(field, reason) for every rule a figure's typed values break; `shown` gives a field's text as written."""
    shown = shown or {}

    def text(field: str) -> str:
        return repr(shown.get(field, _num(values[field])))

    indicator, value = values["indicator"], values.get("value")
    num, den = values.get("numerator"), values.get("denominator")
    ratio = is_ratio(indicator)
    out: list[tuple[str, str]] = []
    for field in ("numerator", "denominator"):
        if values.get(field) is not None and values[field] < 0:
            out.append((field, f"{text(field)} is negative"))
    if num is not None and den is not None and num >= 0 and den >= 0:
        if den == 0:
            out.append(("denominator", "is 0, so numerator ÷ denominator is undefined"))
        elif ratio and num > den:
            out.append(("numerator", f"{text('numerator')} is above the denominator {_num(den)}"))
        elif value is not None and abs(value - num / den) > RATIO_TOLERANCE:
            out.append(
                (
                    "value",
                    f"{text('value')} is not numerator ÷ denominator = {_num(num)} ÷ {_num(den)} = "
                    f"{num / den:.6g} (leave {_heading('value')} empty to have it computed)",
                )
            )
    if value is None and (num is None or den is None):
        out.append(("value", f"is empty: give a value, or both {_heading('numerator')} and {_heading('denominator')}"))
    if value is not None and value < 0:
        out.append(("value", f"{text('value')} is negative"))
    elif value is not None and ratio and value > 1:
        if "%" in shown.get("value", ""):
            out.append(("value", f"{text('value')} is above 100 % for a ratio"))
        else:
            out.append(("value", f"{text('value')} is above 1 for a ratio: write 85% or 0.85"))
    start, end = values.get("period_start"), values.get("period_end")
    if (start is None) != (end is None):
        missing = "period_end" if end is None else "period_start"
        out.append(
            (missing, f"is empty: give both {_heading('period_start')} and {_heading('period_end')}, or neither")
        )
    elif start is not None and end is not None and end < start:
        out.append(("period_end", f"{end.isoformat()} is before {_heading('period_start')} {start.isoformat()}"))
    return out


class DeclaredFigure(_Strict):
    """One row of the template: a declared value of one indicator, for one window, machine or the whole plant.

    Ratios are fractions 0..1; energy is kWh per good part. `value` is always set once validated: when only
    numerator and denominator are given it is their quotient.
    """

    window: WindowKey
    indicator: IndicatorKey
    machine_id: Text | None = Field(description="设备 machine id; None = the whole plant / site")
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    period_start: date | None = None
    period_end: date | None = None
    source_document: Text | None = None
    note: Text | None = None
    row: int = Field(ge=1, description="line (CSV) or row (Excel) of the file it came from")

    @model_validator(mode="after")
    def _rules(self) -> DeclaredFigure:
        problems = _figure_problems(self.__dict__)
        if problems:
            field, reason = problems[0]
            raise located_error((field,), f"{field}: {reason}")
        if self.value is None:  # _figure_problems guarantees numerator and denominator then
            assert self.numerator is not None and self.denominator is not None
            self.value = self.numerator / self.denominator
        return self

    def key(self) -> tuple[str, str, str | None, date | None, date | None]:
        """What may appear only once among active figures: window, indicator, machine and period."""
        return self.window, self.indicator, self.machine_id, self.period_start, self.period_end

    def describe(self) -> str:
        period = f"{self.period_start}–{self.period_end}" if self.period_start else "no period"
        machine = self.machine_id or "whole plant 全厂"
        return f"{self.window} {self.indicator} {INDICATORS[self.indicator].zh}, {machine}, {period}"


class DeclaredImport(_Strict):
    """One imported file: its figures, who declared them and when, who imported the file, its hash."""

    import_id: int
    project_id: Text
    declared_by: Text = Field(description="申报人 the person / role at the firm who declares the figures")
    declared_at: AwareDatetime = Field(description="申报时间 when they were declared")
    imported_at: AwareDatetime
    imported_by: str | None = Field(description="OS user who ran the import")
    file_name: Text
    file_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    figures: list[DeclaredFigure] = Field(min_length=1)
    withdrawn_at: AwareDatetime | None = None
    withdrawn_reason: str | None = None


class DeclaredFileError(ValueError):
    """A declared-figures file is unreadable or invalid; each problem names file, row and column."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


class DeclaredStoreError(ValueError):
    """The store refuses: figures already declared by an active import, a repeated withdrawal, a bad argument."""


class UnknownImport(LookupError):
    pass


# -- reading a file -----------------------------------------------------------------------------

Cell = object  # str from CSV; str, int, float, datetime, bool or None from openpyxl


class _CellError(ValueError):
    pass


def _blank(cell: Cell) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _cell_text(cell: Cell) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # Excel stores machine number 101 as 101.0
    if isinstance(cell, datetime) and cell.time() == datetime.min.time():
        return cell.date().isoformat()
    return unicodedata.normalize("NFKC", str(cell)).strip()


def _optional_text(cell: Cell) -> str | None:
    return None if _blank(cell) else _cell_text(cell)


def _choice(names: dict[str, str], article: str, what: str, choices: str) -> Callable[[Cell], str]:
    def convert(cell: Cell) -> str:
        if _blank(cell):
            raise _CellError(f"is empty: give the {what}")
        key = names.get(_norm(str(cell)))
        if key is None:
            raise _CellError(f"{_cell_text(cell)!r} is not {article} {what}: use {choices}")
        return key

    return convert


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", re.IGNORECASE)
_GROUPED = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")  # 1,234.5


def _number(cell: Cell, percent_ok: bool) -> tuple[float | None, bool]:
    """The cell's number and whether it was written as a percentage (already divided by 100)."""
    if _blank(cell):
        return None, False
    if isinstance(cell, bool) or not isinstance(cell, int | float | str):
        raise _CellError(f"{_cell_text(cell)!r} is not a number")
    if isinstance(cell, int | float):
        if not math.isfinite(cell):
            raise _CellError(f"{cell!r} is not a finite number")
        return float(cell), False
    text = _cell_text(cell).replace(" ", "")
    percent = text.endswith("%")
    digits = text.removesuffix("%")
    if _GROUPED.fullmatch(digits):
        digits = digits.replace(",", "")
    if not _NUMBER.fullmatch(digits):
        raise _CellError(f"{_cell_text(cell)!r} is not a number")
    if percent and not percent_ok:
        raise _CellError(f"{_cell_text(cell)!r}: give a plain number here, not a percentage")
    return (float(digits) / 100 if percent else float(digits)), percent


_DATE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[ T]0{1,2}:00(?::00)?)?")


def _date(cell: Cell) -> date | None:
    if _blank(cell):
        return None
    if isinstance(cell, datetime):
        if cell.time() != datetime.min.time():
            raise _CellError(f"{cell.isoformat(sep=' ')!r} has a time of day: give a date")
        return cell.date()
    if isinstance(cell, date):
        return cell
    m = _DATE.fullmatch(_cell_text(cell))
    if m is None:
        raise _CellError(f"{_cell_text(cell)!r} is not a date: write it as 2024-08-01")
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as e:
        raise _CellError(f"{_cell_text(cell)!r} is not a date: {e}") from None


_window_cell = _choice(_WINDOW_NAMES, "a", "window", "改造前 baseline or 改造后 post")
_indicator_cell = _choice(_INDICATOR_NAMES, "an", "indicator", ", ".join(f"{i.zh} {k}" for k, i in INDICATORS.items()))


def _read_csv(path: Path) -> list[tuple[int, list[Cell]]]:
    try:
        text = path.read_bytes().decode(CSV_ENCODING)  # utf-8-sig also reads UTF-8 without a BOM
    except UnicodeDecodeError as e:
        raise DeclaredFileError(
            path, [f"{path.name}: not UTF-8 text ({e.reason} at byte {e.start}): save it as “CSV UTF-8” (逗号分隔)"]
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return [(reader.line_num, list(record)) for record in reader]
    except csv.Error as e:
        raise DeclaredFileError(path, [f"{path.name}, row {reader.line_num}: not a valid CSV file: {e}"]) from None


def _read_xlsx(path: Path) -> list[tuple[int, list[Cell]]]:
    from openpyxl import load_workbook  # only when an Excel file is read
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, data_only=True)  # data_only: a formula's last computed value
    except (InvalidFileException, zipfile.BadZipFile, KeyError) as e:
        raise DeclaredFileError(path, [f"{path.name}: not a readable .xlsx workbook: {e}"]) from None
    try:
        sheet = next((s for s in book.worksheets if _norm(s.title) in _DATA_SHEET_NAMES), book.worksheets[0])
        return [(i, list(r)) for i, r in enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1)]
    finally:
        book.close()


def _read_rows(path: Path) -> list[tuple[int, list[Cell]]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise DeclaredFileError(path, [f"{path.name}: only .csv and .xlsx files are read (save .xls as .xlsx)"])
    if not path.is_file():
        raise DeclaredFileError(path, [f"{path.name}: no such file ({path})"])
    try:
        return _read_csv(path) if suffix == ".csv" else _read_xlsx(path)
    except OSError as e:
        raise DeclaredFileError(path, [f"{path.name}: cannot read: {e.strerror or e}"]) from None


class _Problems:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []

    def add(self, row: int, column: str | None, reason: str) -> None:
        where = f"{self.name}, row {row}" + (f", column {column}" if column else "")
        self.lines.append(f"{where}: {reason}")

    def listed(self) -> list[str]:
        if len(self.lines) <= MAX_PROBLEMS:
            return self.lines
        return [*self.lines[:MAX_PROBLEMS], f"{self.name}: … and {len(self.lines) - MAX_PROBLEMS} more problems"]


def _column_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index + 1)


def _columns(row: int, cells: list[Cell], problems: _Problems) -> dict[int, str]:
    """Column index -> key, from the heading row."""
    names = _lookup({k: (k, _heading(k)) for k in COLUMNS})
    out: dict[int, str] = {}
    unknown = []
    for i, cell in enumerate(cells):
        if _blank(cell):
            continue
        key = names.get(_norm(str(cell)))
        if key is None:
            unknown.append(repr(_cell_text(cell)))
        elif key in out.values():
            problems.add(row, f"{_column_letter(i)} {_cell_text(cell)}", f"column {_heading(key)} appears twice")
        else:
            out[i] = key
    if unknown:
        expected = ", ".join(_heading(k) for k in COLUMNS)
        problems.add(row, None, f"unknown column(s) {', '.join(unknown)}: the headings are {expected}")
    missing = [_heading(k) for k, c in COLUMNS.items() if c.required and k not in out.values()]
    if "value" not in out.values() and not {"numerator", "denominator"} <= set(out.values()):
        missing.append(_heading("value"))
    if missing:
        problems.add(row, None, f"missing column(s) {', '.join(missing)}")
    return out


def _figure(row: int, cells: dict[str, Cell], problems: _Problems) -> DeclaredFigure | None:
    typed: dict[str, Any] = {"row": row}
    shown: dict[str, str] = {k: _cell_text(c) for k, c in cells.items() if not _blank(c)}
    percent = False
    failed = False
    converters = {
        "window": _window_cell,
        "indicator": _indicator_cell,
        "period_start": _date,
        "period_end": _date,
    }
    for key in COLUMNS:
        cell = cells.get(key)
        try:
            if key in converters:
                typed[key] = converters[key](cell)
            elif key in ("value", "numerator", "denominator"):
                typed[key], is_percent = _number(cell, percent_ok=key == "value")
                percent = percent or is_percent
            else:
                typed[key] = _optional_text(cell)
        except _CellError as e:
            problems.add(row, _heading(key), str(e))
            failed = True
    if failed:
        return None
    found = _figure_problems(typed, shown)
    if percent and not is_ratio(typed["indicator"]):
        unit = f"{INDICATORS[typed['indicator']].zh} {typed['indicator']} is in kWh per good part"
        found.insert(0, ("value", f"{shown['value']!r} is a percentage, but {unit}: give a number"))
    for key, reason in found:
        problems.add(row, _heading(key), reason)
    return None if found else DeclaredFigure.model_validate(typed)


def load_declared_file(path: str | Path) -> list[DeclaredFigure]:
    """The figures of a .csv (UTF-8, with or without BOM) or .xlsx file; DeclaredFileError lists every problem.

    Headings are the English key or the full bilingual heading, in any order; empty rows are skipped.
    In a workbook the sheet named 申报数据 / data is read, else the first sheet.
    """
    path = Path(path)
    rows = [(n, cells) for n, cells in _read_rows(path) if not all(_blank(c) for c in cells)]
    problems = _Problems(path.name)
    if not rows:
        raise DeclaredFileError(path, [f"{path.name}: the file is empty: it needs the heading row and figures"])
    (head_row, head), *data = rows
    columns = _columns(head_row, head, problems)
    if problems.lines:
        raise DeclaredFileError(path, problems.listed())
    figures: list[DeclaredFigure] = []
    first_row: dict[tuple[Any, ...], int] = {}
    for n, cells in data:
        stray = [i for i, c in enumerate(cells) if i not in columns and not _blank(c)]
        for i in stray:
            problems.add(n, _column_letter(i), f"{_cell_text(cells[i])!r} is in a column without a heading")
        figure = _figure(n, {k: cells[i] if i < len(cells) else None for i, k in columns.items()}, problems)
        if figure is None:
            continue
        if figure.key() in first_row:
            problems.add(
                n, _heading("indicator"), f"same window, indicator, machine and period as row {first_row[figure.key()]}"
            )
            continue
        first_row[figure.key()] = n
        figures.append(figure)
    if problems.lines:
        raise DeclaredFileError(path, problems.listed())
    if not figures:
        raise DeclaredFileError(
            path, [f"{path.name}: no figures: there are no rows under the headings (fill in one row per figure)"]
        )
    return figures


# -- the template -------------------------------------------------------------------------------


def write_template(path: str | Path) -> Path:
    """An empty template, .csv (headings only) or .xlsx (data sheet with headings, instructions sheet)."""
    path = Path(path)
    headings = [_heading(k) for k in COLUMNS]
    if path.suffix.lower() == ".csv":
        with path.open("w", encoding=CSV_ENCODING, newline="") as f:
            csv.writer(f).writerow(headings)
        return path
    if path.suffix.lower() != ".xlsx":
        raise ValueError(f"{path}: a template is .csv or .xlsx")
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.worksheet.datavalidation import DataValidation

    book = Workbook()
    data = book.active
    data.title = DATA_SHEET
    data.append(headings)
    for cell in data[1]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="DDEBF7")
        data.column_dimensions[cell.column_letter].width = 22
    data.freeze_panes = "A2"
    # drop-down lists as a help; other spellings (English keys) stay allowed
    for key, choices in (
        ("window", ["改造前", "改造后"]),
        ("indicator", [i.zh for i in INDICATORS.values()]),
    ):
        letter = _column_letter(list(COLUMNS).index(key))
        dv = DataValidation(type="list", formula1='"' + ",".join(choices) + '"', allow_blank=True)
        dv.showErrorMessage = False
        dv.add(f"{letter}2:{letter}1000")
        data.add_data_validation(dv)

    info = book.create_sheet(INSTRUCTIONS_SHEET)
    bold = Font(bold=True)
    lines: list[tuple[object, ...] | None] = [
        ("申报基线导入模板 Declared baseline import template",),
        ("在“申报数据 data”工作表中每行填写一项指标数值；本页仅为说明，不会被导入。",),
        ("Fill in one figure per row in the sheet “申报数据 data”; this sheet is not imported.",),
        ("这些数值为企业申报/导入数据，在证据报告中与实测数据分开显示，并注明申报人和申报时间。",),
        ("These figures are declared (imported): shown apart from measured ones, with who declared them and when.",),
        ("同一文件中，窗口、指标、设备、期间都相同的行只能有一行；文件有任何错误时整个文件都不导入。",),
        ("One row per window, indicator, machine and period; a file with any error is not imported at all.",),
        None,
        ("列 column", "必填 required", "说明", "Explanation"),
        *((_heading(k), "是 yes" if c.required else "否 no", c.help_zh, c.help_en) for k, c in COLUMNS.items()),
        None,
        ("指标 indicator", "中文", "English", "单位 unit"),
        *(
            (k, i.zh, i.en, "比率 0–100 % ratio" if i.unit == "ratio" else "kWh/合格件 kWh per good part")
            for k, i in INDICATORS.items()
        ),
        None,
        ("窗口 window", "中文", "", ""),
        *((k, "、".join(zh), "", "") for k, zh in WINDOWS.items()),
        None,
        ("示例（仅供参考，请在“申报数据 data”工作表中填写）Examples, for reference: fill in the data sheet",),
        tuple(headings),
        *EXAMPLE_ROWS,
    ]
    for line in lines:
        info.append(list(line) if line else [])
        if line and (line[0] in ("列 column", "指标 indicator", "窗口 window") or line == tuple(headings)):
            for cell in info[info.max_row]:
                cell.font = bold
    info["A1"].font = Font(bold=True, size=14)
    for letter, width in zip("ABCDEFGHIJ", (28, 22, 60, 70, 16, 16, 16, 16, 22, 18), strict=True):
        info.column_dimensions[letter].width = width
    for row in info.iter_rows():
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    book.save(path)
    return path


# -- storage: tables of their own in the ingest's store -----------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS declared_imports (
    import_id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused
    project_id       TEXT NOT NULL,
    declared_by      TEXT NOT NULL,
    declared_at      TEXT NOT NULL,
    imported_at      TEXT NOT NULL,
    imported_by      TEXT,
    file_name        TEXT NOT NULL,
    file_sha256      TEXT NOT NULL,
    withdrawn_at     TEXT,
    withdrawn_reason TEXT
);
CREATE INDEX IF NOT EXISTS declared_imports_project ON declared_imports (project_id, import_id);
CREATE TABLE IF NOT EXISTS declared_figures (
    import_id       INTEGER NOT NULL REFERENCES declared_imports (import_id),
    position        INTEGER NOT NULL,  -- order in the file
    "window"        TEXT NOT NULL,
    indicator       TEXT NOT NULL,
    machine_id      TEXT,
    value           REAL NOT NULL,
    numerator       REAL,
    denominator     REAL,
    period_start    TEXT,
    period_end      TEXT,
    source_document TEXT,
    note            TEXT,
    "row"           INTEGER NOT NULL,
    PRIMARY KEY (import_id, position)
);
"""
# append-only, against slips rather than intent: figures never change, an import is only ever withdrawn once
_SQLITE_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS declared_figures_no_update BEFORE UPDATE ON declared_figures
BEGIN SELECT RAISE(ABORT, 'declared figures are append-only'); END;
CREATE TRIGGER IF NOT EXISTS declared_figures_no_delete BEFORE DELETE ON declared_figures
BEGIN SELECT RAISE(ABORT, 'declared figures are append-only'); END;
CREATE TRIGGER IF NOT EXISTS declared_imports_no_delete BEFORE DELETE ON declared_imports
BEGIN SELECT RAISE(ABORT, 'declared imports are append-only: withdraw instead'); END;
CREATE TRIGGER IF NOT EXISTS declared_imports_fixed BEFORE UPDATE OF
    import_id, project_id, declared_by, declared_at, imported_at, imported_by, file_name, file_sha256
ON declared_imports
BEGIN SELECT RAISE(ABORT, 'declared imports are append-only: withdraw instead'); END;
CREATE TRIGGER IF NOT EXISTS declared_imports_withdraw_once BEFORE UPDATE OF withdrawn_at, withdrawn_reason
ON declared_imports WHEN OLD.withdrawn_at IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'a withdrawn import stays withdrawn'); END;
"""
# the same refusals on PostgreSQL (plus TRUNCATE, which skips row triggers); the message is the trigger's argument
_PG_TRIGGERS = """
CREATE OR REPLACE FUNCTION declared_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END
$$;
CREATE OR REPLACE TRIGGER declared_figures_no_update BEFORE UPDATE ON declared_figures
FOR EACH ROW EXECUTE FUNCTION declared_refuse('declared figures are append-only');
CREATE OR REPLACE TRIGGER declared_figures_no_delete BEFORE DELETE ON declared_figures
FOR EACH ROW EXECUTE FUNCTION declared_refuse('declared figures are append-only');
CREATE OR REPLACE TRIGGER declared_figures_no_truncate BEFORE TRUNCATE ON declared_figures
FOR EACH STATEMENT EXECUTE FUNCTION declared_refuse('declared figures are append-only');
CREATE OR REPLACE TRIGGER declared_imports_no_delete BEFORE DELETE ON declared_imports
FOR EACH ROW EXECUTE FUNCTION declared_refuse('declared imports are append-only: withdraw instead');
CREATE OR REPLACE TRIGGER declared_imports_no_truncate BEFORE TRUNCATE ON declared_imports
FOR EACH STATEMENT EXECUTE FUNCTION declared_refuse('declared imports are append-only: withdraw instead');
CREATE OR REPLACE TRIGGER declared_imports_fixed BEFORE UPDATE OF
    import_id, project_id, declared_by, declared_at, imported_at, imported_by, file_name, file_sha256
ON declared_imports
FOR EACH ROW EXECUTE FUNCTION declared_refuse('declared imports are append-only: withdraw instead');
CREATE OR REPLACE TRIGGER declared_imports_withdraw_once BEFORE UPDATE OF withdrawn_at, withdrawn_reason
ON declared_imports FOR EACH ROW WHEN (OLD.withdrawn_at IS NOT NULL)
EXECUTE FUNCTION declared_refuse('a withdrawn import stays withdrawn');
"""

_FIGURE_COLUMNS = (
    "window",
    "indicator",
    "machine_id",
    "value",
    "numerator",
    "denominator",
    "period_start",
    "period_end",
    "source_document",
    "note",
    "row",
)
_IMPORT_COLUMNS = (
    "import_id",
    "project_id",
    "declared_by",
    "declared_at",
    "imported_at",
    "imported_by",
    "file_name",
    "file_sha256",
    "withdrawn_at",
    "withdrawn_reason",
)


def _sql_columns(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def store_imports(conn: Connection, name: str, project_id: str) -> list[DeclaredImport]:
    """The project's active imports read over an open store connection (no DDL, so a read-only one
    will do); none when nothing was ever declared in that store."""
    if not has_table(conn, "declared_imports"):
        return []
    return DeclaredStore.reader(conn, name).imports(project_id)


class DeclaredStore:
    """The declared-figures tables of an ingest store. Opens its own connection; the ingest may run meanwhile."""

    def __init__(self, target: StoreTarget) -> None:
        self.path = mask(target)
        self._conn: Connection = connect(target)
        self._owned = True
        create_tables(self._conn, _SCHEMA, sqlite_extra=_SQLITE_TRIGGERS, pg_extra=_PG_TRIGGERS)

    @classmethod
    def reader(cls, conn: Connection, name: str) -> DeclaredStore:
        """The reading methods over another's connection (a read-only one, say): no DDL, not closed here."""
        store = cls.__new__(cls)
        store.path, store._conn, store._owned = name, conn, False
        return store

    def __enter__(self) -> DeclaredStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._conn.close()

    def add(
        self,
        project_id: str,
        figures: list[DeclaredFigure],
        *,
        declared_by: str,
        declared_at: datetime | None,
        file_name: str,
        file_sha256: str,
        imported_by: str | None,
    ) -> DeclaredImport:
        """Store one file's figures as a new import; nothing is stored if anything is wrong.

        Refused (DeclaredStoreError): no figures, a figure twice, or a figure (same window, indicator,
        machine and period) that an active import of the project already declares — withdraw that one first.
        """
        imported_at = datetime.now(UTC)
        if declared_at is not None and declared_at.tzinfo is None:
            raise DeclaredStoreError(f"declared_at {declared_at.isoformat()} needs a UTC offset")
        seen: dict[tuple[Any, ...], int] = {}
        for f in figures:
            if f.key() in seen:
                raise DeclaredStoreError(f"{file_name}, row {f.row}: {f.describe()} is also in row {seen[f.key()]}")
            seen[f.key()] = f.row
        try:  # validated before anything is written; the id comes from the insert
            record = DeclaredImport(
                import_id=0,
                project_id=project_id,
                declared_by=declared_by,
                declared_at=declared_at or imported_at,
                imported_at=imported_at,
                imported_by=imported_by,
                file_name=file_name,
                file_sha256=file_sha256,
                figures=figures,
            )
        except ValidationError as e:
            raise DeclaredStoreError("; ".join(f"{_dotted(err['loc'])}: {err['msg']}" for err in e.errors())) from None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            clashes = [
                f"{file_name}, row {seen[f.key()]}: {f.describe()} is already declared by import #{imp.import_id} "
                f"({imp.file_name}, declared by {imp.declared_by}); withdraw that import first"
                for imp, f in self.figures(record.project_id)
                if f.key() in seen
            ]
            if clashes:
                raise DeclaredStoreError("\n".join(clashes))
            (import_id,) = self._conn.execute(
                f"INSERT INTO declared_imports ({_sql_columns(_IMPORT_COLUMNS[1:8])}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "RETURNING import_id",  # psycopg has no lastrowid
                tuple(_sql_value(getattr(record, c)) for c in _IMPORT_COLUMNS[1:8]),
            ).fetchone()
            record = record.model_copy(update={"import_id": int(import_id)})
            self._conn.executemany(
                f"INSERT INTO declared_figures (import_id, position, {_sql_columns(_FIGURE_COLUMNS)}) "
                f"VALUES (?, ?, {', '.join('?' for _ in _FIGURE_COLUMNS)})",
                [
                    (record.import_id, i, *(_sql_value(getattr(f, c)) for c in _FIGURE_COLUMNS))
                    for i, f in enumerate(record.figures)
                ],
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return record

    def imports(self, project_id: str, include_withdrawn: bool = False) -> list[DeclaredImport]:
        """The project's imports, oldest first; withdrawn ones only if asked for."""
        where = "project_id = ?" + ("" if include_withdrawn else " AND withdrawn_at IS NULL")
        rows = self._conn.execute(
            f"SELECT {_sql_columns(_IMPORT_COLUMNS)} FROM declared_imports WHERE {where} ORDER BY import_id",
            (project_id,),
        ).fetchall()
        return [self._import(row) for row in rows]

    def figures(self, project_id: str) -> list[tuple[DeclaredImport, DeclaredFigure]]:
        """Every figure of the project's active (not withdrawn) imports, oldest import first, in file order."""
        return [(imp, f) for imp in self.imports(project_id) for f in imp.figures]

    def get(self, import_id: int) -> DeclaredImport:
        row = self._conn.execute(
            f"SELECT {_sql_columns(_IMPORT_COLUMNS)} FROM declared_imports WHERE import_id = ?", (import_id,)
        ).fetchone()
        if row is None:
            raise UnknownImport(f"no declared import #{import_id} in {self.path}")
        return self._import(row)

    def withdraw(self, import_id: int, reason: str) -> DeclaredImport:
        """Mark an import withdrawn (its figures stop counting); it stays in the store with when and why."""
        if not reason.strip():
            raise DeclaredStoreError("give the reason for withdrawing the import")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            current = self.get(import_id)
            if current.withdrawn_at is not None:
                raise DeclaredStoreError(
                    f"import #{import_id} was already withdrawn at {current.withdrawn_at.isoformat()} "
                    f"({current.withdrawn_reason})"
                )
            self._conn.execute(
                "UPDATE declared_imports SET withdrawn_at = ?, withdrawn_reason = ? WHERE import_id = ?",
                (datetime.now(UTC).isoformat(), reason.strip(), import_id),
            )
            record = self.get(import_id)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return record

    def _import(self, row: tuple[Any, ...]) -> DeclaredImport:
        data = dict(zip(_IMPORT_COLUMNS, row, strict=True))
        figure_rows = self._conn.execute(
            f"SELECT {_sql_columns(_FIGURE_COLUMNS)} FROM declared_figures WHERE import_id = ? ORDER BY position",
            (data["import_id"],),
        ).fetchall()
        data["figures"] = [dict(zip(_FIGURE_COLUMNS, r, strict=True)) for r in figure_rows]
        return DeclaredImport.model_validate(data)


def _sql_value(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value  # datetime is a date too


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(import)"


__all__ = [
    "COLUMNS",
    "INDICATORS",
    "WINDOWS",
    "DeclaredFigure",
    "DeclaredFileError",
    "DeclaredImport",
    "DeclaredStore",
    "DeclaredStoreError",
    "IndicatorKey",
    "UnknownImport",
    "WindowKey",
    "is_ratio",
    "load_declared_file",
    "write_template",
]
