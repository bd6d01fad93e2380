"""Channel classification: every default rule, precedence, and clear errors for a bad rules file."""

from pathlib import Path
from typing import Any

import pytest

from services.ingest.channels import ChannelClassifier, ChannelRulesError

classifier = ChannelClassifier.from_file()


@pytest.mark.parametrize(
    ("kind", "event", "channel"),
    [
        # 1. explicit channel wins over everything else
        ("page", {"context": {"channel": "Email"}}, "email"),
        ("screen", {"properties": {"channel": "social"}}, "social"),
        ("page", {"context": {"channel": "carrier-pigeon"}}, "web"),  # not a channel: ignored
        # 2. utm medium
        ("page", {"context": {"campaign": {"medium": "newsletter"}}}, "email"),
        ("page", {"context": {"campaign": {"medium": "E-Mail"}}}, "email"),
        ("page", {"context": {"campaign": {"medium": "social-media"}}}, "social"),
        ("page", {"context": {"campaign": {"medium": "sm"}}}, "social"),
        # 3. social source or referrer domain
        ("page", {"context": {"campaign": {"source": "facebook", "medium": "cpc"}}}, "social"),
        ("page", {"context": {"page": {"referrer": "https://www.linkedin.com/feed/"}}}, "social"),
        ("page", {"context": {"page": {"referrer": "https://l.instagram.com/?u=x"}}}, "social"),
        ("page", {"context": {"page": {"referrer": "https://t.co/abc"}}}, "social"),
        ("page", {"context": {"page": {"referrer": "https://notfacebook.com/"}}}, "web"),
        ("page", {"context": {"page": {"referrer": "http://[x"}}}, "web"),  # no URL: no domain
        # 4. Segment email events
        ("track", {"event": "Email Link Clicked"}, "email"),
        ("track", {"event": "Email Opened", "context": {"userAgent": "Mozilla/5.0"}}, "email"),
        # 5. mobile: screen calls, app context, mobile OS, device type
        ("screen", {}, "mobile"),
        ("track", {"event": "Application Opened", "context": {"app": {"name": "Shop"}}}, "mobile"),
        ("track", {"event": "X", "context": {"os": {"name": "Android"}}}, "mobile"),
        ("track", {"event": "X", "context": {"device": {"type": "ios"}}}, "mobile"),
        # 6. page calls or a browser user agent
        ("page", {}, "web"),
        ("track", {"event": "Signed Up", "context": {"userAgent": "Mozilla/5.0 (X11)"}}, "web"),
        # 7. everything else
        ("track", {"event": "Signed Up"}, "other"),
        ("identify", {"traits": {"email": "a@example.com"}}, "other"),
    ],
)
def test_default_rules(kind: str, event: dict[str, Any], channel: str) -> None:
    assert classifier.classify(kind, event) == channel


def test_utm_medium_beats_social_referrer_and_email_event_beats_mobile_app() -> None:
    event = {"context": {"campaign": {"medium": "email"}, "page": {"referrer": "https://x.com/"}}}
    assert classifier.classify("page", event) == "email"
    assert (
        classifier.classify("track", {"event": "Email Opened", "context": {"app": {"name": "A"}}})
        == "email"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "cannot read channel rules"),
        ("", "expected one or more [[rule]]"),
        ('[[rule]]\nchannel = "web"\n[[rule.when]]\ntype_in = ["page"]\n', "needs a `name`"),
        (
            '[[rule]]\nname = "x"\nchannel = "fax"\n[[rule.when]]\ntype_in = ["page"]\n',
            "`channel` must be one of",
        ),
        ('[[rule]]\nname = "x"\nchannel = "web"\n', "needs at least one [[rule.when]]"),
        (
            '[[rule]]\nname = "x"\nchannel = "web"\n[[rule.when]]\ncolour = "blue"\n',
            "unknown condition",
        ),
        (
            '[[rule]]\nname = "x"\nchannel = "web"\n[[rule.when]]\nevent_in = "Signed Up"\n',
            "must be a list",
        ),
    ],
)
def test_bad_rules_file_fails_with_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ChannelRulesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ChannelClassifier.from_file(path)


def test_custom_rules_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rule]]\nname = "sms"\nchannel = "mobile"\n[[rule.when]]\nevent_in = ["SMS Clicked"]\n'
    )
    custom = ChannelClassifier.from_file(path)
    assert custom.classify("track", {"event": "SMS Clicked"}) == "mobile"
    assert custom.classify("page", {}) == "other"
