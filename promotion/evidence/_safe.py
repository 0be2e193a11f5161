"""Safe-parsing helpers every evidence parser shares.

Reports come from CI jobs and are untrusted: these helpers enforce the size limit before any
parsing, decode text strictly (UTF-8, or UTF-16/32 with a BOM), refuse non-finite JSON numbers,
stream XML through ``defusedxml`` with entity declarations and external references refused,
and turn every problem into :class:`EvidenceUnreadable` naming the format and what is wrong.
"""

from __future__ import annotations

import codecs
import io
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar
from xml.etree.ElementTree import Element, ParseError

from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException, EntitiesForbidden, ExternalReferenceForbidden

from promotion.errors import EvidenceUnreadable

#: Largest report accepted, checked before parsing. Real reports are far smaller (a Surefire run
#: of thousands of tests is a few MiB); the cap bounds the time and memory a hostile file costs.
MAX_EVIDENCE_BYTES = 32 * 1024 * 1024
#: Deepest XML nesting accepted. Real reports nest fewer than ten levels; open elements cannot be
#: discarded while streaming, so unbounded depth would defeat the flat-memory parse.
MAX_XML_DEPTH = 128

T = TypeVar("T")


def _fail(fmt: str, problem: str) -> NoReturn:
    raise EvidenceUnreadable(fmt, problem)


def _checked(data: object, fmt: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        _fail(fmt, f"expected the report's bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > MAX_EVIDENCE_BYTES:
        _fail(
            fmt,
            f"the report is {len(raw)} bytes; reports larger than {MAX_EVIDENCE_BYTES} bytes "
            f"({MAX_EVIDENCE_BYTES // (1024 * 1024)} MiB) are refused",
        )
    if not raw or raw.isspace():
        _fail(fmt, "the report is empty")
    return raw


def _guarded(fmt: str, parse: Callable[[bytes], T], data: bytes) -> T:
    try:
        return parse(data)
    except EvidenceUnreadable:
        raise
    except RecursionError:
        _fail(fmt, "the report is nested too deeply to read")
    except Exception as exc:
        # Safety net: a report shaped in a way no explicit check foresaw must fail the gate with
        # a readable message, never crash the flow evaluating it.
        raise EvidenceUnreadable(fmt, f"unexpected report structure ({type(exc).__name__}: {exc})") from exc


#: UTF-32 before UTF-16: the UTF-32-LE mark (FF FE 00 00) begins with the UTF-16-LE one (FF FE).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def bom_codec(data: bytes) -> tuple[str, int] | None:
    """``(codec, length of the mark)`` when the bytes start with a UTF-16/32 byte order mark.

    UTF-16/32 is accepted only with a BOM: that is how Windows tools (PowerShell redirection)
    write them. The codec named decodes the mark itself (``"utf-16"``, not ``"utf-16-le"``).
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    return None


def _decode(data: bytes, fmt: str) -> str:
    marked = bom_codec(data)
    if marked is not None:
        codec = marked[0]
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            _fail(fmt, f"not valid {codec.upper()} text ({exc.reason} at byte {exc.start})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _fail(fmt, f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the report as UTF-8")
    if "\x00" in text:
        # Raw NULs never occur in JSON, CSV or lcov text; UTF-16 without a BOM looks like this.
        _fail(fmt, "not UTF-8 text (it contains NUL bytes: UTF-16 without a byte order mark?)")
    return text


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity by default; a NaN compares false with every threshold and would
    # let a gate pass silently.
    raise EvidenceUnreadable("JSON", f"the non-standard number {name} is not allowed")


def _load_json(data: bytes, fmt: str) -> Any:
    text = _decode(data, fmt)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except EvidenceUnreadable as exc:
        _fail(fmt, exc.problem)
    except json.JSONDecodeError as exc:
        hint = " (the file ends early: truncated?)" if exc.pos >= len(text.rstrip()) else ""
        _fail(fmt, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}")
    except RecursionError:
        _fail(fmt, "the JSON is nested too deeply to read")


def _num(value: object) -> float | None:
    """A finite number from a JSON value or numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _count(value: object, fmt: str, what: str) -> int:
    """A non-negative whole number (``3``, ``"3"``, ``3.0``) or EvidenceUnreadable."""
    number = _num(value)
    if number is None or number < 0 or number != int(number):
        _fail(fmt, f"{what} is {value!r}; expected a whole number >= 0")
    return int(number)


def _first_char(data: bytes) -> str:
    """First non-blank character of the text, ignoring a BOM (used to sniff the format)."""
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
        (codecs.BOM_UTF8, "utf-8"),
    ):
        if data.startswith(bom):
            head = data[: 4096 + len(bom)].decode(codec, errors="ignore")
            break
    else:
        head = data[:4096].decode("utf-8", errors="ignore")
    head = head.lstrip("\ufeff \t\r\n")
    return head[:1]


# --- XML --------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _xml_problem(exc: ParseError) -> str:
    text = str(exc)
    if text.startswith(("no element found", "unclosed token")):
        return f"the XML ends early (truncated?): {text}"
    if text.startswith("not well-formed (invalid token)"):
        return (
            f"not well-formed XML: {text}; if the file is XML, check that it is saved in the "
            "encoding its XML declaration names (UTF-8 when none)"
        )
    return f"not well-formed XML: {text}"


def _walk_xml(data: bytes, fmt: str) -> Iterator[tuple[str, Element, list[str]]]:
    """Stream ``("start"|"end", element, names)``; ``names`` are the open elements, root first.

    On ``start`` the element's attributes are complete; on ``end`` its children are already
    gone (each element is cleared and detached once its ``end`` was handled, which keeps memory
    flat). ``names`` is live: read it, never keep it.
    """
    names: list[str] = []
    open_elements: list[Element] = []
    try:
        events = DefusedET.iterparse(
            io.BytesIO(data),
            events=("start", "end"),
            forbid_dtd=False,
            forbid_entities=True,
            forbid_external=True,
        )
        for event, elem in events:
            if event == "start":
                if len(names) >= MAX_XML_DEPTH:
                    _fail(fmt, f"elements are nested more than {MAX_XML_DEPTH} levels deep")
                names.append(_local(elem.tag))
                open_elements.append(elem)
                yield "start", elem, names
            else:
                yield "end", elem, names
                names.pop()
                open_elements.pop()
                elem.clear()
                if open_elements:
                    open_elements[-1].remove(elem)
    except EvidenceUnreadable:
        raise
    except EntitiesForbidden as exc:
        _fail(
            fmt,
            f"the document declares the entity {exc.name!r}; entity declarations are refused "
            "because they enable XXE and entity-expansion (billion laughs) attacks",
        )
    except ExternalReferenceForbidden as exc:
        _fail(fmt, f"the document references the external resource {exc.sysid!r}; refused")
    except DefusedXmlException as exc:
        _fail(fmt, f"unsafe XML refused: {exc}")
    except ParseError as exc:
        _fail(fmt, _xml_problem(exc))
    except (LookupError, UnicodeError, ValueError) as exc:
        _fail(fmt, f"cannot decode the XML: {exc}")


def _obj(value: object, fmt: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "missing" if value is None else f"a {type(value).__name__}"
        _fail(fmt, f"{where} is {kind}; expected an object")
    return value


def _list(value: object, fmt: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(fmt, f"{where} is a {type(value).__name__}; expected an array")
    return value
