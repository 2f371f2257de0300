"""Odoo's Caisse-AP module as a POS command, with Odoo itself stubbed.

Usage: odoo_pos.py MODULE_FILE HOST PORT AMOUNT TIMEOUT_MS

MODULE_FILE is models/pos_payment_method.py from the odoo-addon-l10n-fr-pos-
caisse-ap-ip wheel (downloaded by the test, never kept in this tree). The
module's own request and answer code runs unchanged: its
fr_caisse_ap_ip_send_payment() is called as Odoo's point of sale calls it,
and its result mapped to the kit's exit statuses: "success" 0, "failure" 1,
"issue" 3. An exception that escapes the module exits 4: in Odoo the cashier
then sees a server error, not an outcome.
"""

import runpy
import sys
import traceback
import types


def _stub_odoo() -> None:
    odoo = types.ModuleType("odoo")
    api = types.ModuleType("odoo.api")
    api.constrains = lambda *names: (lambda method: method)
    api.model = lambda method: method
    fields = types.ModuleType("odoo.fields")
    fields.Selection = fields.Char = fields.Integer = lambda *args, **kwargs: None
    models = types.ModuleType("odoo.models")

    class Model:
        def browse(self, ids):
            return self

        def ensure_one(self):
            return self

    models.Model = Model
    exceptions = types.ModuleType("odoo.exceptions")
    exceptions.ValidationError = type("ValidationError", (Exception,), {})
    odoo.api, odoo.fields, odoo.models, odoo.exceptions = api, fields, models, exceptions
    sys.modules.update({"odoo": odoo, "odoo.api": api, "odoo.fields": fields,
                        "odoo.models": models, "odoo.exceptions": exceptions})


class Currency:
    name = "EUR"
    decimal_places = 2

    @staticmethod
    def compare_amounts(a, b):
        return (a > b) - (a < b)


def _translate(message, *args, **kwargs):
    if args:
        return message % args
    return message % kwargs if kwargs else message


class Env(dict):
    _ = staticmethod(_translate)


def main() -> int:
    module_file, host, port, amount, timeout_ms = sys.argv[1:6]
    _stub_odoo()
    module = runpy.run_path(module_file)
    method = module["PosPaymentMethod"]()
    method.env = Env({"res.currency": types.SimpleNamespace(browse=lambda ids: Currency())})
    method.fr_caisse_ap_ip_address, method.fr_caisse_ap_ip_port = host, int(port)
    method.fr_caisse_ap_ip_mode = "card"
    try:
        result = method.fr_caisse_ap_ip_send_payment({
            "payment_method_id": 1, "amount": float(amount), "currency_id": 1,
            "timeout": int(timeout_ms)})
    except Exception:
        traceback.print_exc()
        return 4
    print(result)
    return {"success": 0, "failure": 1}.get(result.get("payment_status"), 3)


if __name__ == "__main__":
    sys.exit(main())
