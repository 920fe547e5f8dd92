#!/usr/bin/python3
"""pricing: unit prices per SKU, for services/inventory.lua's low-stock alerts."""
import argparse
import logging

import _path  # noqa: F401  (finds ../../python when smartshop is not installed)
from smartshop import Curve, RemoteError, Service, default_endpoint

log = logging.getLogger("pricing")
PRICES = {"A1": 2.5, "B2": 10.0}


def main():
    parser = argparse.ArgumentParser(description="Smartshop pricing service")
    parser.add_argument("--endpoint", default=default_endpoint())
    parser.add_argument("--server-key", help="the broker's public key file (CURVE)")
    parser.add_argument("--key", help="our key pair's prefix, as --keygen wrote it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    curve = Curve.load(args.server_key, args.key) if args.server_key else None
    svc = Service("pricing", args.endpoint, curve=curve, workers=4)

    def sku_of(req):
        sku = req.payload.get("sku") if isinstance(req.payload, dict) else None
        if not isinstance(sku, str):
            raise RemoteError("bad_request", "payload must be {\"sku\": string}")
        return sku

    @svc.handler("price")
    def price(req):
        sku = sku_of(req)
        if sku not in PRICES:
            raise RemoteError("unknown_sku", "no price for %s" % sku)
        return {"sku": sku, "price": PRICES[sku]}

    @svc.handler("set_price")
    def set_price(req):
        sku, value = sku_of(req), req.payload.get("price")
        if not isinstance(value, (int, float)) or value <= 0:
            raise RemoteError("bad_request", "price must be a positive number")
        PRICES[sku] = value
        return {"sku": sku, "price": value}

    @svc.on_event("low_stock")
    def low_stock(ev):
        log.info("low stock: %s (%s left)", ev.payload.get("sku"), ev.payload.get("qty"))

    svc.run(on_ready=lambda: log.info("serving on %s", args.endpoint))


if __name__ == "__main__":
    main()
