"""The SDK matrix's visit with segment-analytics-python or rudder-sdk-python, configured as their
READMEs show and left at their defaults but for the host, the write key (and `gzip` where asked):
python python_visit.py '{"sdk": ..., "host": ..., "writeKey": ..., "visit": {...}}'."""

import json
import sys
from datetime import datetime
from typing import Any


def main() -> None:
    args = json.loads(sys.argv[1])
    if args["sdk"] == "segment":
        import segment.analytics as analytics

        analytics.host = args["host"]
        analytics.gzip = args.get("gzip", analytics.gzip)
    else:
        import rudderstack.analytics as analytics  # type: ignore[no-redef]

        analytics.dataPlaneUrl = args["host"]
    analytics.write_key = args["writeKey"]
    errors: list[str] = []

    def on_error(error: Exception, batch: Any) -> None:
        errors.append(repr(error))

    analytics.on_error = on_error
    visit = args["visit"]
    anonymous_id, user_id = visit["anonymousId"], visit["userId"]
    analytics.page(
        anonymous_id=anonymous_id,
        name="Landing",
        properties={"url": visit["url"]},
        context={"campaign": visit["campaign"], "page": {"url": visit["url"]}},
        timestamp=datetime.fromisoformat(visit["pageAt"]),
    )
    analytics.identify(
        user_id,
        {"email": visit["email"]},
        anonymous_id=anonymous_id,
        timestamp=datetime.fromisoformat(visit["identifyAt"]),
    )
    order = {
        "order_id": visit["orderId"],
        "revenue": visit["revenue"],
        "currency": visit["currency"],
    }
    analytics.track(
        user_id,
        "Order Completed",
        {**order, "currency": visit["currency"]},
        anonymous_id=anonymous_id,
        timestamp=datetime.fromisoformat(visit["orderAt"]),
    )
    analytics.flush()
    analytics.shutdown()
    print(json.dumps({"errors": errors}))


if __name__ == "__main__":
    main()
