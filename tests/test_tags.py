import pytest

from caisse_ap import tags
from caisse_ap.tags import (
    ACTION_STATUS,
    ACTIONS,
    APPLICATIONS,
    FAILURE_REASONS,
    READ_MODES,
    TABLES,
    TAGS,
    Tag,
    describe,
    label,
    tag,
)

PROTOCOL_TAGS = [
    "CZ", "CJ", "CA", "CB", "CD", "CE", "BA", "BB", "BF", "CC", "CF", "CH", "CK", "BH", "BI",
    "AE", "AF", "CI", "AA", "AB", "AC", "AI", "CG", "AD", "AG", "AH", "ZT", "AK",
]


def test_every_protocol_tag_is_known():
    assert set(PROTOCOL_TAGS) <= set(TAGS)
    for code, t in TAGS.items():
        assert t.code == code
        assert t.name and t.label_fr


@pytest.mark.parametrize("t", list(TAGS.values()), ids=lambda t: t.code)
def test_tag_sizes_and_sender_are_sane(t):
    assert 1 <= t.min_size <= t.max_size <= 999
    assert t.sender in ("pos", "terminal", "both")


@pytest.mark.parametrize(
    "code, min_size, max_size",
    [("CZ", 4, 4), ("CJ", 12, 12), ("CA", 2, 2), ("CB", 1, 12), ("CD", 1, 1),
     ("CE", 3, 3), ("BA", 1, 1), ("BB", 1, 1), ("BF", 1, 1), ("CC", 3, 3),
     ("CF", 1, 99), ("CK", 3, 3), ("AE", 2, 2), ("AF", 2, 50), ("CI", 1, 1),
     ("AB", 4, 4), ("AC", 1, 10), ("BH", 1, 999), ("AK", 1, 999)],
)
def test_sizes_from_protocol(code, min_size, max_size):
    assert (tag(code).min_size, tag(code).max_size) == (min_size, max_size)


def test_only_zt_is_constructed():
    assert [t.code for t in TAGS.values() if t.constructed] == ["ZT"]


def test_senders():
    assert tag("BH").sender == tag("BI").sender == tag("BA").sender == "pos"
    assert tag("AE").sender == tag("ZT").sender == "terminal"
    assert tag("CB").sender == "both"


def test_known_tag_names():
    assert tag("CB").name == "amount"
    assert tag("CB").label_fr == "montant"
    assert tag("BI").name == "customer_email"


def test_unknown_tag_never_raises():
    assert tag("QQ") == Tag("QQ", "unknown tag 'QQ'", "tag inconnu 'QQ'", 1, 999, "both")
    assert "QQ" not in TAGS  # the lookup must not register it
    assert tag("").label_fr == "tag inconnu ''"


def test_action_status_codes():
    assert set(ACTION_STATUS) == {"10", "01", "11"}
    assert label(ACTION_STATUS, "10") == "opération effectuée"
    assert label(ACTION_STATUS, "01", "en") == "operation not done"
    assert label(ACTION_STATUS, "11") == "demande prise en compte"


def test_failure_reasons_codes_and_labels():
    assert set(FAILURE_REASONS) == {f"{n:02d}" for n in range(14)}
    assert label(FAILURE_REASONS, "00") == "Inconnu"
    assert label(FAILURE_REASONS, "04") == "Refusée"
    assert label(FAILURE_REASONS, "08") == "Opération non effectuée, time-out saisie"
    assert label(FAILURE_REASONS, "12") == (
        "Opération non effectuée, type d'action demandé inconnu")
    assert label(FAILURE_REASONS, "13") == "Devise non supportée"
    assert label(FAILURE_REASONS, "13", "en") == "Currency not supported"


def test_applications_codes():
    expected = {"000", "001", "002", "003", "004", "005", "006", "007", "008",
                "009", "00A", "00B", "00C", "00D", "00E", "00F", "00I", "00U", "10E"}
    assert set(APPLICATIONS) == expected
    assert label(APPLICATIONS, "001") == "CB contact"
    assert label(APPLICATIONS, "00B") == "CB sans contact"
    assert label(APPLICATIONS, "002") == "American Express contact"
    assert label(APPLICATIONS, "00C") == "Chèque"
    assert label(APPLICATIONS, "00C", "en") == "Cheque"


def test_read_modes_and_actions():
    assert set(READ_MODES) == {"0", "1", "2", "3", "4"}
    assert label(READ_MODES, "2") == "sans contact"
    assert label(READ_MODES, "3") == "piste magnétique"
    assert set(ACTIONS) == {"0", "1", "2", "3", "4"}
    assert label(ACTIONS, "1") == "crédit (remboursement)"
    assert label(ACTIONS, "3", "en") == "duplicate"


def test_every_code_has_both_labels():
    for table in TABLES.values():
        for code, entry in table.items():
            assert entry.code == code
            assert entry.label_fr and entry.label_en


def test_tables_mapping():
    assert TABLES == {"AE": ACTION_STATUS, "AF": FAILURE_REASONS, "CC": APPLICATIONS,
                      "CI": READ_MODES, "CD": ACTIONS}


@pytest.mark.parametrize("table", list(TABLES.values()))
def test_unknown_code_never_raises(table):
    assert label(table, "XY") == "code inconnu 'XY'"
    assert label(table, "XY", "en") == "unknown code 'XY'"
    assert label(table, "") == "code inconnu ''"


def test_describe_coded_tags():
    assert describe("AE", "10") == "opération effectuée"
    assert describe("CC", "00B", "en") == "CB (Visa/Mastercard) contactless"
    assert describe("CI", "1") == "contact"
    assert describe("CD", "2") == "annulation"


def test_describe_af_ignores_acquirer_details():
    # 2 chars reason, then response code, 21 chars message, 2+2 chars.
    value = "04" + "05" + "REFUS BANQUE".ljust(21) + "0102"
    assert describe("AF", value) == "Refusée"
    assert describe("AF", value, "en") == "Refused"
    assert describe("AF", "09") == "Opération non effectuée, erreur format message"


def test_describe_never_raises():
    assert describe("CB", "11245") == ""
    assert describe("QQ", "x") == ""
    assert describe("AF", "") == "code inconnu ''"
    assert describe("AF", "9") == "code inconnu '9'"
    assert describe("AE", "99", "en") == "unknown code '99'"


def test_module_exports_required_names():
    for name in ("Tag", "TAGS", "tag", "Code", "ACTION_STATUS", "FAILURE_REASONS",
                 "APPLICATIONS", "READ_MODES", "ACTIONS", "label", "describe", "TABLES"):
        assert hasattr(tags, name)
