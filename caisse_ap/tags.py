"""Tag dictionary and code tables of the Caisse-AP protocol.

Pure data plus a few lookups that never raise: a receiver must ignore tags
and codes it does not know (new ones appear with each version and vendor),
so unknown entries get a readable placeholder instead of an exception.
Source: PROTOCOL.md sections 3 and 4.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tag:
    code: str
    name: str
    label_fr: str
    min_size: int
    max_size: int
    sender: str  # "pos", "terminal" or "both"
    constructed: bool = False


@dataclass(frozen=True)
class Code:
    code: str
    label_fr: str
    label_en: str


# Sizes not given by PROTOCOL.md are 1..999 (the whole range of a TLV length).
# Fields the terminal echoes from the request are sent by "both".
_TAG_LIST = [
    Tag("CZ", "protocol_version", "version du protocole", 4, 4, "both"),
    Tag("CJ", "protocol_id", "identifiant protocole Concert", 12, 12, "both"),
    Tag("CA", "register", "numéro de caisse", 2, 2, "both"),
    # One digit is valid (CB0015 = 0.05 EUR, as Odoo and Nepting send it); zero-padding too.
    Tag("CB", "amount", "montant", 1, 12, "both"),
    Tag("CD", "action", "type d'action", 1, 1, "both"),
    Tag("CE", "currency", "devise", 3, 3, "both"),
    Tag("BA", "answer_mode", "mode de réponse", 1, 1, "pos"),
    Tag("BB", "force_online", "forçage autorisation en ligne", 1, 1, "pos"),
    Tag("BF", "partial_payment", "paiement partiel", 1, 1, "both"),
    Tag("CC", "application", "application de paiement", 3, 3, "both"),
    # Nepting and PayXpert take 1-99 in requests; some document 32 for answers (see
    # PORTABLE_REFERENCE_SIZE).
    Tag("CF", "private_data", "données privées", 1, 99, "both"),
    Tag("CH", "previous_reference", "référence transaction précédente", 1, 999, "pos"),
    # CK is sent by the POS in a request and by the terminal inside ZT.
    Tag("CK", "receipt_mode", "gestion du ticket", 3, 3, "both"),
    # BH/BI: customer contact of a refund request, seen in real frames only.
    Tag("BH", "customer_phone", "téléphone client", 1, 999, "pos"),
    Tag("BI", "customer_email", "e-mail client", 1, 999, "pos"),
    Tag("AE", "action_status", "statut de l'action", 2, 2, "terminal"),
    Tag("AF", "failure_reason", "complément de statut", 2, 50, "terminal"),
    Tag("CI", "read_mode", "mode de lecture", 1, 1, "terminal"),
    Tag("AA", "masked_pan", "numéro de carte masqué", 1, 999, "terminal"),
    Tag("AB", "expiry_date", "date de fin de validité", 4, 4, "terminal"),
    Tag("AC", "authorisation_number", "numéro d'autorisation", 1, 10, "terminal"),
    Tag("AI", "aid", "identifiant d'application carte", 1, 999, "terminal"),
    # CG: no public size; 7 characters on Nepting and Fidecoin. 10 is this project's
    # bound (the settings' seller_contract and the profiles are checked against it).
    Tag("CG", "seller_contract", "numéro de contrat commerçant", 1, 10, "terminal"),
    Tag("AD", "cmc7_line", "ligne CMC7 du chèque", 1, 999, "terminal"),
    Tag("AG", "fnci_answer", "réponse FNCI", 1, 999, "terminal"),
    Tag("AH", "guarantee_answer", "réponse garantie", 1, 999, "terminal"),
    Tag("ZT", "receipt_block", "bloc ticket", 1, 999, "terminal", constructed=True),
    Tag("AK", "customer_receipt", "ticket client (base64)", 1, 999, "terminal"),
    # Sent by some terminals only (PayXpert "Concert V3", docs/profiles.md).
    Tag("AL", "pan_type", "type de PAN (1 = partiel)", 1, 1, "terminal"),
    Tag("AP", "operation_date", "date de l'opération", 13, 13, "terminal"),
    Tag("AQ", "terminal_serial", "numéro de série du terminal", 2, 20, "terminal"),
    Tag("ID", "transaction_id", "identifiant de la transaction", 1, 999, "terminal"),
    Tag("IM", "debit_transaction_id", "identifiant du débit remboursé", 1, 999, "terminal"),
]
TAGS: dict[str, Tag] = {t.code: t for t in _TAG_LIST}
# The longest CF that every terminal echoes whole: what a careful POS sends.
PORTABLE_REFERENCE_SIZE = 32
_LENGTHS = {t.code: range(t.min_size, t.max_size + 1) for t in _TAG_LIST}
_ANY_LENGTH = range(1, 1000)


def fits(code: str, value: str) -> bool:
    """Whether `value` has a size the tag table allows for `code` (any size for unknown tags)."""
    return len(value) in _LENGTHS.get(code, _ANY_LENGTH)


def misfits(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields whose size the tag table does not allow: what fits() says, for a whole
    message at once (a terminal checks every request)."""
    lengths, anything = _LENGTHS, _ANY_LENGTH
    return [field for field in fields if len(field[1]) not in lengths.get(field[0], anything)]


def tag(code: str) -> Tag:
    """The Tag for `code`; a placeholder Tag for an unknown one (never raises)."""
    known = TAGS.get(code)
    if known is not None:
        return known
    return Tag(code, f"unknown tag '{code}'", f"tag inconnu '{code}'", 1, 999, "both")


def _table(*rows: tuple[str, str, str]) -> dict[str, Code]:
    return {c: Code(c, fr, en) for c, fr, en in rows}


ACTION_STATUS = _table(  # AE
    ("10", "opération effectuée", "operation done"),
    ("01", "opération non effectuée", "operation not done"),
    ("11", "demande prise en compte", "request taken into account"),
)

FAILURE_REASONS = _table(  # AF, first two chars
    ("00", "Inconnu", "Unknown"),
    ("01", "Transaction autorisée", "Authorised transaction"),
    ("02", "Appel phonie", "Phone authorisation needed"),
    ("03", "Forçage", "Forced"),
    ("04", "Refusée", "Refused"),
    ("05", "Interdite", "Forbidden"),
    ("06", "Abandon", "Abandoned"),
    ("07", "Non aboutie", "Not completed"),
    ("08", "Opération non effectuée, time-out saisie", "Operation not done, input time-out"),
    ("09", "Opération non effectuée, erreur format message",
     "Operation not done, message format error"),
    ("10", "Opération non effectuée, erreur sélection", "Operation not done, selection error"),
    ("11", "Opération non effectuée, abandon opérateur", "Operation not done, operator abandon"),
    ("12", "Opération non effectuée, type d'action demandé inconnu",
     "Operation not done, unknown action type"),
    ("13", "Devise non supportée", "Currency not supported"),
)

APPLICATIONS = _table(  # CC
    ("000", "Indifférent / autre", "Indifferent / other"),
    ("001", "CB contact", "CB (Visa/Mastercard) contact"),
    ("002", "American Express contact", "American Express contact"),
    ("003", "CB Enseigne", "CB Enseigne"),
    ("004", "Cetelem", "Cetelem"),
    ("005", "Cofinoga", "Cofinoga"),
    ("006", "Diners Club", "Diners Club"),
    ("007", "CB-Pass", "CB-Pass"),
    ("008", "Franfinance", "Franfinance"),
    ("009", "JCB", "JCB"),
    ("00A", "Banque Accord", "Banque Accord"),
    ("00B", "CB sans contact", "CB (Visa/Mastercard) contactless"),
    ("00C", "Chèque", "Cheque"),
    ("00D", "American Express sans contact", "American Express contactless"),
    ("00E", "CONECS (titres-restaurant) contact", "CONECS (meal vouchers) contact"),
    ("00F", "DCC", "DCC"),
    ("00I", "CPEI", "CPEI"),
    ("00U", "UnionPay (CUP)", "UnionPay (CUP)"),
    ("10E", "CONECS sans contact", "CONECS contactless"),
)

READ_MODES = _table(  # CI
    ("0", "indifférent", "indifferent"),
    ("1", "contact", "contact (chip)"),
    ("2", "sans contact", "contactless"),
    ("3", "piste magnétique", "magnetic stripe"),
    ("4", "saisie manuelle", "manual entry"),
)

ACTIONS = _table(  # CD
    ("0", "débit", "debit"),
    ("1", "crédit (remboursement)", "credit (refund)"),
    ("2", "annulation", "cancellation"),
    ("3", "duplicata", "duplicate"),
    # Some terminals only (Fidecoin "CAISSE_AP V3.20"); a standard one answers AF=12.
    ("4", "pré-autorisation", "pre-authorisation"),
)

TABLES: dict[str, dict[str, Code]] = {
    "AE": ACTION_STATUS,
    "AF": FAILURE_REASONS,
    "CC": APPLICATIONS,
    "CI": READ_MODES,
    "CD": ACTIONS,
}


def label(table: dict[str, Code], code: str, lang: str = "fr") -> str:
    """Label of `code` in `table` ("fr" or "en"); a placeholder if unknown."""
    entry = table.get(code)
    if lang == "en":
        return entry.label_en if entry else f"unknown code '{code}'"
    return entry.label_fr if entry else f"code inconnu '{code}'"


def describe(tag_code: str, value: str, lang: str = "fr") -> str:
    """Label of a field value for coded tags, "" for other tags (never raises)."""
    table = TABLES.get(tag_code)
    if table is None:
        return ""
    if tag_code == "AF":
        # Only the two first chars are the reason; acquirer details may follow.
        value = value[:2]
    return label(table, value, lang)


def field_label(tag_code: str, value: str) -> str:
    """What a field says, in French: its code's label for coded tags, else the tag's."""
    return describe(tag_code, value) or tag(tag_code).label_fr
