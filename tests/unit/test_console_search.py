"""What the console's search box understands: a case id opens the case; an account as
INSTITUTION/NUMBER, an ID number and a name become the hub's ListCases filters; a bare
number asks where the account is kept."""

from __future__ import annotations

from adapters.console.pages.common import search_filters


def test_a_case_id_opens_the_case() -> None:
    assert search_filters(" c20260302-0a1b2c3d ") == ("case", {"case_id": "C20260302-0A1B2C3D"})


def test_an_account_needs_its_institution() -> None:
    what, filters = search_filters("bankb/6222020000000002")
    assert what == "filters"
    account = filters["account"]
    assert (account.institution_code, account.account_number) == ("BANKB", "6222020000000002")
    assert search_filters("6222020000000002") == ("number", {})


def test_id_numbers_and_names() -> None:
    assert search_filters("11010519491231002X") == (
        "filters",
        {"victim_id_number": "11010519491231002X"},
    )
    assert search_filters("  Zhang   San ") == ("filters", {"victim_name": "Zhang San"})
    assert search_filters("张三") == ("filters", {"victim_name": "张三"})
    assert search_filters("") == ("none", {})
