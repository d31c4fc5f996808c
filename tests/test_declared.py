"""Declared (manual) baseline figures: template, CSV and Excel import, errors, storage and history, the commands."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openpyxl import Workbook, load_workbook
from pydantic import ValidationError

from cloud_ingest.bilingual import header
from cloud_ingest.declared import (
    COLUMNS,
    INDICATORS,
    MAX_PROBLEMS,
    DeclaredFigure,
    DeclaredFileError,
    DeclaredStore,
    DeclaredStoreError,
    UnknownImport,
    load_declared_file,
    write_template,
)
from cloud_ingest.dialect import is_postgres
from edgeproof.cli import main

HEADINGS = [header(k, c.zh) for k, c in COLUMNS.items()]
KEYS = list(COLUMNS)
SHA = "ab" * 32
CODE = "91320500MA1PXQ7R0X"  # made up, with the right check character


def fig(**fields: object) -> DeclaredFigure:
    data: dict[str, object] = {"window": "baseline", "indicator": "networking_rate", "machine_id": None, "row": 2}
    return DeclaredFigure.model_validate(data | fields)


def write_csv(path: Path, rows: list[list[object]], head: list[str] = HEADINGS, bom: bool = True) -> Path:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(rows)
    return path


def row(**cells: object) -> list[object]:
    """A data row in template column order."""
    return [cells.get(k, "") for k in KEYS]


def problems(path: Path) -> list[str]:
    with pytest.raises(DeclaredFileError) as info:
        load_declared_file(path)
    assert info.value.path == path
    return info.value.problems


# -- template ------------------------------------------------------------------------------------


def test_xlsx_template_has_headings_only_and_bilingual_instructions(tmp_path: Path) -> None:
    path = write_template(tmp_path / "t.xlsx")
    book = load_workbook(path)
    assert book.sheetnames == ["申报数据 data", "说明 Instructions"]
    assert [list(r) for r in book["申报数据 data"].iter_rows(values_only=True)] == [HEADINGS]
    text = "\n".join(str(c) for r in book["说明 Instructions"].iter_rows(values_only=True) for c in r if c is not None)
    for heading in HEADINGS:
        assert heading in text
    assert "必填。改造前（或 基线）、改造后；也可写 baseline、post。" in text
    assert "Required. baseline (改造前) or post (改造后)." in text
    assert "2024年8月生产日报表" in text  # the example rows live here, not in the data sheet
    assert problems(path) == ["t.xlsx: no figures: there are no rows under the headings (fill in one row per figure)"]


def test_csv_template_is_the_heading_row_with_a_bom(tmp_path: Path) -> None:
    path = write_template(tmp_path / "t.csv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert path.read_bytes().decode("utf-8-sig") == ",".join(HEADINGS) + "\r\n"
    assert problems(path) == ["t.csv: no figures: there are no rows under the headings (fill in one row per figure)"]


def test_xlsx_template_round_trip(tmp_path: Path) -> None:
    path = write_template(tmp_path / "baseline.xlsx")
    book = load_workbook(path)
    sheet = book["申报数据 data"]
    sheet.append(
        row(
            window="改造前",
            indicator="设备联网率",
            numerator=3,
            denominator=10,
            period_start=datetime(2024, 8, 1),
            period_end=datetime(2024, 8, 31),
            source_document="2024年8月设备台账",
            note="仅3台可联网",
        )
    )
    sheet.append(row(window="改造前", indicator="设备综合效率", machine_id="CNC-01", value=0.625))
    sheet.cell(row=3, column=4).number_format = "0.0%"  # Excel keeps 62.5% as the fraction 0.625
    sheet.append(row(window="改造前", indicator="设备综合效率", machine_id=101, value="58%"))  # a numeric machine id
    sheet.append(row(window="改造后", indicator="单件能耗", machine_id="PRESS-02", value=1.35))
    book.save(path)

    figures = load_declared_file(path)
    assert figures == [
        fig(
            value=0.3,
            numerator=3,
            denominator=10,
            period_start=date(2024, 8, 1),
            period_end=date(2024, 8, 31),
            source_document="2024年8月设备台账",
            note="仅3台可联网",
        ),
        fig(indicator="oee", machine_id="CNC-01", value=0.625, row=3),
        fig(indicator="oee", machine_id="101", value=0.58, row=4),
        fig(window="post", indicator="energy_per_good_part", machine_id="PRESS-02", value=1.35, row=5),
    ]
    with DeclaredStore(tmp_path / "s.sqlite") as store:
        imp = store.add(
            "sz-001",
            figures,
            declared_by="张三（设备科）",
            declared_at=None,
            file_name=path.name,
            file_sha256=SHA,
            imported_by="ops",
        )
    with DeclaredStore(tmp_path / "s.sqlite") as store:  # read back through a new connection
        [stored] = store.imports("sz-001")
    assert stored == imp
    assert stored.figures == figures
    assert stored.import_id == 1
    assert stored.declared_at == stored.imported_at  # the default: declared when imported
    assert stored.declared_at.utcoffset() == timedelta(0)


def test_csv_template_round_trip(tmp_path: Path) -> None:
    path = write_template(tmp_path / "baseline.csv")
    with path.open("a", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            row(
                window="基线",
                indicator="关键工序数控化率",
                numerator=4,
                denominator=5,
                period_start="2024/8/1",
                period_end="2024年8月31日",
                source_document="工序清单",
            )
        )
        w.writerow([])  # an empty row is skipped
        w.writerow(row(window="post", indicator="pass_rate", value="98.5%", note="月报"))
    figures = load_declared_file(path)
    assert figures == [
        fig(
            indicator="nc_rate_key_processes",
            value=0.8,
            numerator=4,
            denominator=5,
            period_start=date(2024, 8, 1),
            period_end=date(2024, 8, 31),
            source_document="工序清单",
        ),
        fig(window="post", indicator="pass_rate", value=0.985, note="月报", row=4),
    ]
    declared_at = datetime(2024, 9, 5, 10, 0, tzinfo=timezone(timedelta(hours=8)))
    with DeclaredStore(tmp_path / "s.sqlite") as store:
        store.add(
            "p",
            figures,
            declared_by="李四",
            declared_at=declared_at,
            file_name="baseline.csv",
            file_sha256=SHA,
            imported_by=None,
        )
        [(imp, first), (_, second)] = store.figures("p")
    assert (first, second) == tuple(figures)
    assert imp.declared_at == declared_at
    assert imp.declared_at.utcoffset() == timedelta(hours=8)
    assert imp.imported_by is None


# -- reading -------------------------------------------------------------------------------------


def test_english_keys_in_any_order_without_bom(tmp_path: Path) -> None:
    head = ["value", "indicator", "window", "设备 machine_id"]
    path = write_csv(tmp_path / "b.csv", [["0.7", "digitalisation_rate", "baseline", ""]], head=head, bom=False)
    assert load_declared_file(path) == [fig(indicator="digitalisation_rate", value=0.7)]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("85%", 0.85), ("85 %", 0.85), ("0.85", 0.85), ("８５％", 0.85), ("100%", 1.0), ("0", 0.0), ("12.5%", 0.125)],
)
def test_ratios_as_percentages_or_fractions(tmp_path: Path, cell: str, expected: float) -> None:
    path = write_csv(tmp_path / "b.csv", [row(window="baseline", indicator="oee", value=cell)])
    [f] = load_declared_file(path)
    assert f.value == pytest.approx(expected, abs=1e-12)


def test_value_is_derived_from_numerator_and_denominator(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "b.csv",
        [
            row(window="baseline", indicator="networking_rate", numerator="1", denominator="3"),
            row(window="post", indicator="networking_rate", value="0.3333333", numerator="1", denominator="3"),
            row(window="post", indicator="energy_per_good_part", numerator="1,250", denominator="1000"),
        ],
    )
    a, b, c = load_declared_file(path)
    assert a.value == 1 / 3
    assert b.value == 0.3333333  # within 1e-6 of 1/3: kept as declared
    assert (c.value, c.numerator, c.denominator) == (1.25, 1250.0, 1000.0)  # kWh ÷ good parts


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("设备联网率", "networking_rate"),
        ("设备数字化率", "digitalisation_rate"),
        ("关键工序数控化率", "nc_rate_key_processes"),
        ("设备综合效率", "oee"),
        ("OEE", "oee"),
        ("设备综合效率/OEE", "oee"),
        ("可用率", "availability"),
        ("性能率", "performance"),
        ("合格率", "quality"),
        ("月度平均产品合格率", "pass_rate"),
        ("产能利用率", "capacity_utilisation"),
        ("单件能耗", "energy_per_good_part"),
        ("产能利用率 capacity_utilisation", "capacity_utilisation"),
        ("Capacity_Utilisation", "capacity_utilisation"),
    ],
)
def test_indicator_by_chinese_label_or_key(tmp_path: Path, label: str, key: str) -> None:
    path = write_csv(tmp_path / "b.csv", [row(window="改造前", indicator=label, value="0.5")])
    assert [f.indicator for f in load_declared_file(path)] == [key]


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("改造前", "baseline"),
        ("基线", "baseline"),
        ("baseline", "baseline"),
        ("改造前 baseline", "baseline"),
        ("改造后", "post"),
        ("POST", "post"),
        ("改造后 post", "post"),
    ],
)
def test_window_by_chinese_label_or_key(tmp_path: Path, label: str, key: str) -> None:
    path = write_csv(tmp_path / "b.csv", [row(window=label, indicator="oee", value="0.5")])
    assert [f.window for f in load_declared_file(path)] == [key]


def test_the_data_sheet_is_found_by_name_and_empty_rows_keep_excel_row_numbers(tmp_path: Path) -> None:
    book = Workbook()
    book.active.title = "说明"
    book.active.append(["not read"])
    sheet = book.create_sheet("data")
    sheet.append(["indicator", "window", "value"])
    sheet.append([])
    sheet.append(["可用率", "改造前", "170%"])
    sheet.append([None, None, None])
    sheet.append(["性能率", "改造前", 0.9])
    path = tmp_path / "wb.xlsx"
    book.save(path)
    assert problems(path) == ["wb.xlsx, row 3, column 数值 value: '170%' is above 100 % for a ratio"]
    sheet["C3"] = 0.7
    book.save(path)
    assert [(f.indicator, f.row) for f in load_declared_file(path)] == [("availability", 3), ("performance", 5)]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (
            {"window": "baseline", "indicator": "oee", "value": "120%"},
            "row 2, column 数值 value: '120%' is above 100 % for a ratio",
        ),
        (
            {"window": "baseline", "indicator": "oee", "value": "85"},
            "row 2, column 数值 value: '85' is above 1 for a ratio: write 85% or 0.85",
        ),
        ({"window": "baseline", "indicator": "oee", "value": "-5%"}, "row 2, column 数值 value: '-5%' is negative"),
        ({"window": "baseline", "indicator": "oee", "value": "abc"}, "row 2, column 数值 value: 'abc' is not a number"),
        ({"window": "baseline", "indicator": "oee", "value": "nan"}, "row 2, column 数值 value: 'nan' is not a number"),
        (
            {"window": "baseline", "indicator": "energy_per_good_part", "value": "-0.5"},
            "row 2, column 数值 value: '-0.5' is negative",
        ),
        (
            {"window": "baseline", "indicator": "energy_per_good_part", "value": "5%"},
            "row 2, column 数值 value: '5%' is a percentage, but 单件能耗 energy_per_good_part is in kWh per good "
            "part: give a number",
        ),
        (
            {"window": "before", "indicator": "oee", "value": "0.5"},
            "row 2, column 窗口 window: 'before' is not a window: use 改造前 baseline or 改造后 post",
        ),
        ({"indicator": "oee", "value": "0.5"}, "row 2, column 窗口 window: is empty: give the window"),
        (
            {"window": "baseline", "indicator": "oee", "numerator": "11", "denominator": "10"},
            "row 2, column 分子 numerator: '11' is above the denominator 10",
        ),
        (
            {"window": "baseline", "indicator": "oee", "numerator": "0", "denominator": "0"},
            "row 2, column 分母 denominator: is 0, so numerator ÷ denominator is undefined",
        ),
        (
            {"window": "baseline", "indicator": "oee", "numerator": "-1", "denominator": "10"},
            "row 2, column 分子 numerator: '-1' is negative",
        ),
        (
            {"window": "baseline", "indicator": "oee", "numerator": "5%", "denominator": "10"},
            "row 2, column 分子 numerator: '5%': give a plain number here, not a percentage",
        ),
        (
            {"window": "baseline", "indicator": "oee", "value": "0.5", "numerator": "1", "denominator": "3"},
            "row 2, column 数值 value: '0.5' is not numerator ÷ denominator = 1 ÷ 3 = 0.333333 (leave 数值 value "
            "empty to have it computed)",
        ),
        (
            {"window": "baseline", "indicator": "oee"},
            "row 2, column 数值 value: is empty: give a value, or both 分子 numerator and 分母 denominator",
        ),
        (
            {
                "window": "baseline",
                "indicator": "oee",
                "value": "0.5",
                "period_start": "2024-08-31",
                "period_end": "2024-08-01",
            },
            "row 2, column 期间结束 period_end: 2024-08-01 is before 期间开始 period_start 2024-08-31",
        ),
        (
            {"window": "baseline", "indicator": "oee", "value": "0.5", "period_start": "2024-08-01"},
            "row 2, column 期间结束 period_end: is empty: give both 期间开始 period_start and 期间结束 period_end, "
            "or neither",
        ),
        (
            {
                "window": "baseline",
                "indicator": "oee",
                "value": "0.5",
                "period_start": "2024-02-30",
                "period_end": "2024-03-31",
            },
            "row 2, column 期间开始 period_start: '2024-02-30' is not a date: day is out of range for month",
        ),
        (
            {
                "window": "baseline",
                "indicator": "oee",
                "value": "0.5",
                "period_start": "Aug 2024",
                "period_end": "2024-08-31",
            },
            "row 2, column 期间开始 period_start: 'Aug 2024' is not a date: write it as 2024-08-01",
        ),
    ],
)
def test_each_bad_cell_names_file_row_and_column(tmp_path: Path, cells: dict[str, str], expected: str) -> None:
    path = write_csv(tmp_path / "baseline.csv", [row(**cells)])
    assert problems(path) == [f"baseline.csv, {expected}"]


def test_an_unknown_indicator_lists_the_indicators(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "b.csv", [row(window="baseline", indicator="联网率", value="0.5")])
    [message] = problems(path)
    assert message.startswith(
        "b.csv, row 2, column 指标 indicator: '联网率' is not an indicator: use 设备联网率 "
        "networking_rate, 设备数字化率 digitalisation_rate,"
    )
    assert all(f"{i.zh} {k}" in message for k, i in INDICATORS.items())


def test_unknown_and_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "b.csv", [["x", "baseline", "y"]], head=["foo", "window", "数值value"])
    assert problems(path) == [
        "b.csv, row 1: unknown column(s) 'foo', '数值value': the headings are " + ", ".join(HEADINGS),
        "b.csv, row 1: missing column(s) 指标 indicator, 数值 value",
    ]


def test_a_repeated_column_and_a_value_without_heading_are_errors(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "b.csv", [["baseline", "oee", "0.5", "0.6"]], head=["window", "indicator", "value", "数值 value"]
    )
    assert problems(path) == ["b.csv, row 1, column D 数值 value: column 数值 value appears twice"]
    path = write_csv(tmp_path / "c.csv", [["baseline", "oee", "0.5", "extra"]], head=["window", "indicator", "value"])
    assert problems(path) == ["c.csv, row 2, column D: 'extra' is in a column without a heading"]


def test_duplicates_in_one_file_name_both_rows(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "b.csv",
        [
            row(window="baseline", indicator="oee", machine_id="M1", value="0.5"),
            row(window="baseline", indicator="oee", machine_id="M2", value="0.5"),  # another machine: fine
            row(window="改造前", indicator="设备综合效率", machine_id="M1", value="60%"),
            row(
                window="baseline",
                indicator="oee",
                machine_id="M1",
                value="0.5",
                period_start="2024-08-01",
                period_end="2024-08-31",
            ),  # another period: fine
        ],
    )
    assert problems(path) == [
        "b.csv, row 4, column 指标 indicator: same window, indicator, machine and period as row 2"
    ]


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "b.csv",
        [
            row(window="baseline", indicator="oee", value="0.5"),
            row(window="x", indicator="oee", value="150%"),
            row(
                window="baseline", indicator="quality", value="0.9", period_start="2024-09-01", period_end="2024-08-01"
            ),
        ],
    )
    assert problems(path) == [
        "b.csv, row 3, column 窗口 window: 'x' is not a window: use 改造前 baseline or 改造后 post",
        "b.csv, row 4, column 期间结束 period_end: 2024-08-01 is before 期间开始 period_start 2024-09-01",
    ]  # row 3's value is checked against the indicator's rules only once its window can be read


def test_a_long_list_of_problems_is_cut(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "b.csv", [row(window="baseline", indicator="oee", value="2") for _ in range(60)])
    found = problems(path)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[0] == "b.csv, row 2, column 数值 value: '2' is above 1 for a ratio: write 85% or 0.85"
    assert found[-1] == "b.csv: … and 10 more problems"


def test_unreadable_files(tmp_path: Path) -> None:
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(",".join(HEADINGS).encode("gbk"))
    assert problems(gbk) == [
        "gbk.csv: not UTF-8 text (invalid start byte at byte 0): save it as “CSV UTF-8” (逗号分隔)"
    ]
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a workbook")
    assert problems(fake) == ["fake.xlsx: not a readable .xlsx workbook: File is not a zip file"]
    assert problems(tmp_path / "old.xls") == ["old.xls: only .csv and .xlsx files are read (save .xls as .xlsx)"]
    assert problems(tmp_path / "missing.csv") == [f"missing.csv: no such file ({tmp_path / 'missing.csv'})"]
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    assert problems(empty) == ["empty.csv: the file is empty: it needs the heading row and figures"]


def test_the_model_keeps_the_rules_for_programs() -> None:
    assert fig(value=None, numerator=2, denominator=8).value == 0.25
    with pytest.raises(ValidationError, match=r"value: '1\.2' is above 1 for a ratio"):
        fig(value=1.2)
    with pytest.raises(ValidationError, match="period_end: 2024-07-01 is before"):
        fig(value=0.5, period_start=date(2024, 8, 1), period_end=date(2024, 7, 1))
    with pytest.raises(ValidationError, match="Input should be 'networking_rate'"):
        fig(indicator="设备联网率", value=0.5)  # labels are the file's business; the model takes keys


# -- storage -------------------------------------------------------------------------------------


def add(store: DeclaredStore, figures: list[DeclaredFigure], project: str = "p", name: str = "f.csv") -> int:
    return store.add(
        project, figures, declared_by="张三", declared_at=None, file_name=name, file_sha256=SHA, imported_by="ops"
    ).import_id


def test_withdraw_keeps_history_and_frees_the_figures(store_target: str | Path) -> None:
    with DeclaredStore(store_target) as store:
        first = add(store, [fig(value=0.3), fig(indicator="oee", value=0.6, row=3)], name="old.csv")
        other = add(store, [fig(value=0.9)], project="q")
        with pytest.raises(DeclaredStoreError) as info:
            add(store, [fig(value=0.4)], name="new.csv")
        assert str(info.value) == (
            "new.csv, row 2: baseline networking_rate 设备联网率, whole plant 全厂, no period is already declared by "
            "import #1 (old.csv, declared by 张三); withdraw that import first"
        )
        assert [i.import_id for i in store.imports("p")] == [first]  # the refused import stored nothing

        withdrawn = store.withdraw(first, "  填错月份 wrong month ")
        assert withdrawn.withdrawn_reason == "填错月份 wrong month"
        assert withdrawn.withdrawn_at is not None and withdrawn.withdrawn_at <= datetime.now(UTC)
        second = add(store, [fig(value=0.4)], name="new.csv")
        assert second == 3 and other == 2

        assert [i.import_id for i in store.imports("p")] == [second]
        assert store.imports("p", include_withdrawn=True) == [withdrawn, *store.imports("p")]
        assert [(i.import_id, f.value) for i, f in store.figures("p")] == [(3, 0.4)]
        assert [(i.import_id, f.value) for i, f in store.figures("q")] == [(2, 0.9)]

        with pytest.raises(DeclaredStoreError, match=r"import #1 was already withdrawn at .* \(填错月份 wrong month\)"):
            store.withdraw(first, "again")
        with pytest.raises(UnknownImport, match="no declared import #99"):
            store.withdraw(99, "x")
        with pytest.raises(DeclaredStoreError, match="give the reason"):
            store.withdraw(second, " ")


def test_the_tables_are_append_only(store_target: str | Path) -> None:
    with DeclaredStore(store_target) as store:
        add(store, [fig(value=0.3)])
    # a plain connection of the back-end, not the store's: the triggers refuse whoever writes
    conn: Any = psycopg.connect(str(store_target), autocommit=True) if is_postgres(store_target) else (
        sqlite3.connect(store_target, isolation_level=None)
    )
    refused = (psycopg.errors.RestrictViolation, sqlite3.IntegrityError)
    for sql in (
        "DELETE FROM declared_figures",
        "UPDATE declared_figures SET value = 0.9",
        "DELETE FROM declared_imports",
        "UPDATE declared_imports SET declared_by = 'someone else'",
        *(["TRUNCATE declared_figures", "TRUNCATE declared_imports CASCADE"] if is_postgres(store_target) else []),
    ):
        with pytest.raises(refused, match="append-only"):
            conn.execute(sql)
    conn.execute("UPDATE declared_imports SET withdrawn_at = '2024-01-01T00:00:00+00:00', withdrawn_reason = 'r'")
    with pytest.raises(refused, match="stays withdrawn"):
        conn.execute("UPDATE declared_imports SET withdrawn_at = NULL")
    assert conn.execute("SELECT COUNT(*) FROM declared_figures").fetchone() == (1,)
    conn.close()


def test_figures_come_oldest_import_first(store_target: str | Path) -> None:
    with DeclaredStore(store_target) as store:
        add(store, [fig(window="post", value=0.9), fig(value=0.2, row=3)], name="a.csv")
        add(store, [fig(indicator="oee", value=0.5)], name="b.csv")
        listed = [(i.file_name, f.window, f.indicator) for i, f in store.figures("p")]
    assert listed == [
        ("a.csv", "post", "networking_rate"),
        ("a.csv", "baseline", "networking_rate"),
        ("b.csv", "baseline", "oee"),
    ]


def test_the_store_refuses_bad_imports(store_target: str | Path) -> None:
    with DeclaredStore(store_target) as store:
        with pytest.raises(DeclaredStoreError, match=r"f\.csv, row 3: .* is also in row 2"):
            add(store, [fig(value=0.2), fig(value=0.3, row=3)])
        with pytest.raises(DeclaredStoreError, match="needs a UTC offset"):
            store.add(
                "p",
                [fig(value=0.2)],
                declared_by="x",
                declared_at=datetime(2024, 9, 1),
                file_name="f.csv",
                file_sha256=SHA,
                imported_by=None,
            )
        with pytest.raises(DeclaredStoreError, match="declared_by: String should have at least 1 character"):
            store.add(
                "p",
                [fig(value=0.2)],
                declared_by="  ",
                declared_at=None,
                file_name="f.csv",
                file_sha256=SHA,
                imported_by=None,
            )
        with pytest.raises(DeclaredStoreError, match="figures: List should have at least 1 item"):
            add(store, [])
        assert store.imports("p", include_withdrawn=True) == []


# -- the commands ---------------------------------------------------------------------------------


def create_project(db: str | Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "project",
                "create",
                "--db",
                str(db),
                "--id",
                "sz-001",
                "--firm",
                "苏州示范精密机械有限公司",
                "--credit-code",
                CODE,
                "--provider",
                "某数字化服务商",
                "--baseline",
                "2024-03-01T08:00+08:00/2024-03-01T10:00+08:00",
                "--post",
                "2024-06-01T08:00+08:00/2024-06-01T10:00+08:00",
                "--agent",
                "line-1",
            ]
        )
        == 0
    )
    capsys.readouterr()


def test_cli_template_import_list_withdraw(
    tmp_path: Path, store_target: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_target
    create_project(db, capsys)
    xlsx = tmp_path / "baseline.xlsx"
    assert main(["baseline", "template", str(xlsx)]) == 0
    assert capsys.readouterr().out == f"wrote {xlsx}\n"
    assert main(["baseline", "template", str(xlsx)]) == 2  # never overwrites a possibly filled-in file
    assert capsys.readouterr().err == f"baseline: error: {xlsx} exists; give another name\n"

    assert main(["baseline", "import", str(xlsx), "--project", "sz-001", "--declared-by", "张三", "--db", str(db)]) == 2
    assert capsys.readouterr().err == (
        "baseline: error: baseline.xlsx: no figures: there are no rows under the headings "
        "(fill in one row per figure)\n"
    )
    book = load_workbook(xlsx)
    book["申报数据 data"].append(row(window="改造前", indicator="设备联网率", numerator=3, denominator=10))
    book["申报数据 data"].append(row(window="改造前", indicator="OEE", value="62.5%", source_document="生产日报表"))
    book.save(xlsx)
    sha = hashlib.sha256(xlsx.read_bytes()).hexdigest()

    argv = [
        "baseline",
        "import",
        str(xlsx),
        "--project",
        "sz-001",
        "--declared-by",
        "张三（设备科）",
        "--declared-at",
        "2024-09-05T10:00+08:00",
        "--store",
        str(db),
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        "imported #1: 2 figures for project sz-001 from baseline.xlsx",
        f"sha256 {sha}",
        "申报/导入数据，非实测：张三（设备科） 于 2024-09-05T10:00:00+08:00 申报 — declared (imported) figures, not "
        "measured: declared by 张三（设备科） at 2024-09-05T10:00:00+08:00",
    ]
    assert main(argv) == 2  # the same figures again: refused while the first import is active
    err = capsys.readouterr().err
    assert err.startswith(
        "baseline: error: baseline.xlsx, row 2: baseline networking_rate 设备联网率, whole plant 全厂, "
        "no period is already declared by import #1 (baseline.xlsx, declared by 张三（设备科）); withdraw that "
        "import first\nbaseline: error: baseline.xlsx, row 3: baseline oee"
    )

    assert main(["baseline", "list", "--project", "sz-001", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [
        "申报/导入数据，非实测 — declared (imported) figures, not measured",
        "#1  有效 active",
        "  申报人 declared by 张三（设备科）, 申报时间 declared at 2024-09-05T10:00:00+08:00",
    ]
    assert f"sha256 {sha}" in out
    assert "设备联网率 networking_rate" in out and "30%" in out and "62.5%" in out and "生产日报表" in out

    assert main(["baseline", "withdraw", "1", "--reason", "数据有误", "--db", str(db)]) == 0
    assert capsys.readouterr().out == (
        "withdrew #1 of project sz-001 (baseline.xlsx, 2 figures): 数据有误; it stays in the history (list --all)\n"
    )
    assert main(["baseline", "list", "--project", "sz-001", "--db", str(db)]) == 0
    assert capsys.readouterr().out == "no declared figures for project sz-001 (--all: withdrawn too)\n"
    assert main(["baseline", "list", "--project", "sz-001", "--db", str(db), "--all", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["withdrawn_reason"] == "数据有误"
    assert listed["file_sha256"] == sha
    assert listed["declared_at"] == "2024-09-05T10:00:00+08:00"
    assert [(f["indicator"], f["value"], f["row"]) for f in listed["figures"]] == [
        ("networking_rate", 0.3, 2),
        ("oee", 0.625, 3),
    ]
    assert main(argv) == 0  # after the withdrawal the figures can be declared again
    assert capsys.readouterr().out.startswith("imported #2: 2 figures")


def test_cli_user_errors_exit_2_and_store_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ingest.sqlite"
    good = write_csv(tmp_path / "good.csv", [row(window="baseline", indicator="oee", value="0.5")])
    base = ["baseline", "import", str(good), "--declared-by", "张三", "--db", str(db)]
    assert main([*base, "--project", "sz-001"]) == 2
    assert capsys.readouterr().err == f"baseline: error: no store at {db}\n"
    create_project(db, capsys)
    assert main([*base, "--project", "nope"]) == 2
    assert capsys.readouterr().err == f"baseline: error: no project 'nope' in {db} (projects: sz-001)\n"
    assert main([*base, "--project", "sz-001", "--declared-at", "2024-09-05T10:00"]) == 2
    assert capsys.readouterr().err == (
        "baseline: error: --declared-at '2024-09-05T10:00' has no UTC offset (add e.g. +08:00 or Z)\n"
    )
    bad = write_csv(
        tmp_path / "bad.csv",
        [
            row(window="baseline", indicator="oee", value="0.5"),
            row(window="baseline", indicator="quality", value="120%"),
            row(window="post", indicator="合格", value="0.9"),
        ],
    )
    assert main(["baseline", "import", str(bad), "--project", "sz-001", "--declared-by", "张三", "--db", str(db)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "baseline: error: bad.csv, row 3, column 数值 value: '120%' is above 100 % for a ratio"
    assert err[1].startswith("baseline: error: bad.csv, row 4, column 指标 indicator: '合格' is not an indicator")
    assert len(err) == 2
    with DeclaredStore(db) as store:
        assert store.imports("sz-001", include_withdrawn=True) == []  # row 2 was fine, yet nothing is stored
    assert main(["baseline", "withdraw", "7", "--reason", "x", "--db", str(db)]) == 2
    assert capsys.readouterr().err == f"baseline: error: no declared import #7 in {db}\n"
    assert main(["baseline", "template", str(tmp_path / "t.txt")]) == 2
    assert (
        capsys.readouterr().err == f"baseline: error: {tmp_path / 't.txt'}: the template is written as .xlsx or .csv\n"
    )
