"""Finding the account from what the person remembers (issue #17): text folding, carrier-domain
families, fuzzy fragment matching, masking, and the evidence rule.

The functions here are pure (no database): :mod:`privacy_lock.finder` runs the search and the
audit around them. Three rules hold everywhere:

- **Folding never rewrites an address.** Typed text and stored values are compared after NFKC,
  case folding and trimming (``ｔａｒｏ`` is ``taro``), nothing more: docomo's pre-2009
  addresses with ``..`` or ``.@`` are matched as they were stored.
- **Carrier domains are families.** A domain a person remembers may be one the carrier renamed
  (``ezweb.ne.jp`` became ``au.com``; J-Phone's ``jp-t.ne.jp`` became ``t.vodafone.ne.jp``, then
  ``softbank.ne.jp``): any member of the family matches any other. A domain is never evidence of
  who someone is (thousands share it), only a filter.
- **Nothing personal is shown whole.** Addresses, nicknames and remembered text are masked
  (``ta***85@ezweb.ne.jp``), dates shown as year-month.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from privacy_lock.errors import UsageError

# The shortest fragment the tool accepts: one trigram. Shorter ones would let a support login
# enumerate accounts letter by letter.
MIN_FRAGMENT = 3
# A mail fragment at least this long is, alone, enough evidence to list candidates (a local part
# of 6 characters is rarely shared); shorter ones need a second, independent piece of evidence.
STRONG_FRAGMENT = 6
# Evidence points a search (and each candidate listed) needs: two independent fragments, or one
# strong mail fragment (worth two).
MIN_EVIDENCE = 2
# A fragment matches a value when its trigram similarity to the best part of the value reaches
# this (a substring scores 1.0; one typo in an 8-character fragment scores about 0.5).
MATCH_THRESHOLD = 0.45
MAX_FRAGMENT = 100
# A remembered join date counts as evidence only when it names at most this many months.
JOINED_EVIDENCE_MONTHS = 24

# Carrier domains that became each other (the same subscribers, renamed), by family.
CARRIER_FAMILIES: dict[str, tuple[str, ...]] = {
    "docomo": ("docomo.ne.jp",),
    "au": ("ezweb.ne.jp", "au.com", "ido.ne.jp"),
    "softbank": ("jp-t.ne.jp", "jp-d.ne.jp", "jp-h.ne.jp", "jp-c.ne.jp", "jp-k.ne.jp",
                 "jp-n.ne.jp", "jp-q.ne.jp", "jp-r.ne.jp", "jp-s.ne.jp", "vodafone.ne.jp",
                 "softbank.ne.jp", "i.softbank.jp", "disney.ne.jp"),
    "willcom": ("pdx.ne.jp", "willcom.com", "wcm.ne.jp", "y-mobile.ne.jp", "ymobile.ne.jp"),
}
# Words a person may say for the family instead of a domain ("it was a vodafone address").
_FAMILY_WORDS = {"docomo": "docomo", "imode": "docomo", "ezweb": "au", "au": "au",
                 "vodafone": "softbank", "softbank": "softbank", "j-phone": "softbank",
                 "jphone": "softbank", "willcom": "willcom", "ymobile": "willcom"}


def fold(text: str) -> str:
    """Text as the tool compares it: NFKC (full width is half width), case folded, trimmed.
    Dots, hyphens and every other character are kept as they are."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


def carrier_family(domain: str) -> str | None:
    """The carrier family of a domain (``t.vodafone.ne.jp`` -> ``softbank``), or None."""
    domain = fold(domain).lstrip("@").rstrip(".")
    for family, domains in CARRIER_FAMILIES.items():
        for member in domains:
            if domain == member or domain.endswith("." + member):
                return family
    return None


def family_of_hint(text: str) -> str | None:
    """The family a remembered domain or word names (``ezweb``, ``@au.com``, ``vodafone``)."""
    text = fold(text).lstrip("@").rstrip(".")
    if text in _FAMILY_WORDS:
        return _FAMILY_WORDS[text]
    family = carrier_family(text)
    if family:
        return family
    for family, domains in CARRIER_FAMILIES.items():  # a domain's first label: "jp-t", "ezweb"
        if any(d.split(".")[0] == text or d.startswith(text + ".") for d in domains):
            return family
    return None


# --- similarity --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def trigrams(text: str) -> frozenset[str]:
    """The trigrams of ``text`` padded as pg_trgm pads a word (two spaces before, one after)."""
    padded = f"  {text} "
    return frozenset(padded[i:i + 3] for i in range(len(padded) - 2))


def similarity(a: str, b: str) -> float:
    """Trigram similarity (shared / all), as pg_trgm's ``similarity``."""
    ta, tb = trigrams(a), trigrams(b)
    return len(ta & tb) / len(ta | tb) if ta and tb else 0.0


def fragment_score(fragment: str, value: str) -> float:
    """How well a folded ``fragment`` matches anywhere in a folded ``value``: 1.0 when it is a
    substring, else the best trigram similarity to a stretch of the value about as long (a
    typo, a missing or an extra letter), as pg_trgm's ``word_similarity``."""
    if not fragment or not value:
        return 0.0
    if fragment in value:
        return 1.0
    wanted = trigrams(fragment)
    # No stretch of the value shares more trigrams with the fragment than the whole value
    # does: when even that is below the threshold, the windows need not be tried.
    bound = len(wanted & trigrams(value)) / len(wanted)
    if bound < MATCH_THRESHOLD:
        return bound * MATCH_THRESHOLD
    n = len(fragment)
    best = similarity(fragment, value) if len(value) <= n + 1 else 0.0
    for size in (n, n - 1, n + 1):  # a changed letter first; a missing or extra one after
        if best >= MATCH_THRESHOLD or size < MIN_FRAGMENT or size > len(value):
            continue
        for start in range(len(value) - size + 1):
            window = value[start:start + size]
            if window[0] in fragment or window[-1] in fragment:  # else no better than others
                best = max(best, similarity(fragment, window))
    return best


def search_pieces(fragment: str) -> list[str]:
    """Substrings of a folded fragment such that a value holding the fragment with one typo
    still holds one of them whole: the fragment itself when short, else its two halves
    (each at least :data:`MIN_FRAGMENT` long). The SQL filter looks for these."""
    if len(fragment) < 2 * MIN_FRAGMENT:
        return [fragment]
    half = len(fragment) // 2
    return [fragment[:half], fragment[half:]]


# --- masking -----------------------------------------------------------------------------------


def mask_text(text: str, keep: int = 1) -> str:
    """The first ``keep`` characters and ``***``: enough for support to see which value matched,
    not enough to read it."""
    text = text.strip()
    if not text:
        return ""
    return text[:keep] + "***"


def mask_address(address: str) -> str:
    """``taro1985@ezweb.ne.jp`` -> ``ta***85@ezweb.ne.jp``: at most four characters of the local
    part (two when it is short), a carrier domain shown (it names millions), another domain
    masked as well (it may be the person's own)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        local, domain = address.strip(), ""
    if len(local) >= 8:
        shown = f"{local[:2]}***{local[-2:]}"
    elif len(local) >= 4:
        shown = f"{local[:2]}***"
    else:
        shown = f"{local[:1]}***"
    if not domain:
        return shown
    if carrier_family(domain) is None:
        labels = domain.split(".")
        domain = f"{labels[0][:1]}***.{labels[-1]}" if len(labels) > 1 else "***"
    return f"{shown}@{domain}"


def year_month(value: object) -> str | None:
    """A date or timestamp (or its ISO text) as ``YYYY-MM``; None when there is none."""
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return f"{value.year:04d}-{value.month:02d}"
    match = re.match(r"^(\d{4})-(\d{2})", str(value))
    return f"{match.group(1)}-{match.group(2)}" if match else None


# --- what the person remembers -----------------------------------------------------------------


@dataclass(frozen=True)
class MailFragment:
    """A remembered part of an address: ``text`` to find in the local part (or anywhere), and
    the carrier family its domain part names, if any."""

    raw: str
    text: str  # folded; "" when only a domain was remembered
    family: str | None
    domain_text: str  # folded domain part (not a carrier one), "" when none
    hint: str = ""  # the domain or carrier word as remembered ("vodafone.ne.jp", "ezweb")


def parse_mail_fragment(raw: str) -> MailFragment:
    """Split ``taro@ezweb`` into the text to find (``taro``) and the family (``au``); a bare
    carrier name or domain (``ezweb.ne.jp``, ``vodafone``) is a family only."""
    folded = fold(raw)
    local, at, domain = folded.partition("@")
    if not at:
        family = family_of_hint(folded)
        if family is not None:
            return MailFragment(raw, "", family, "", folded.lstrip("@"))
        return MailFragment(raw, folded, None, "")
    family = family_of_hint(domain) if domain else None
    domain_text = "" if family or not domain else domain
    # "taro@" keeps the "@": the fragment is the end of the local part. "taro@ezweb" keeps
    # only the local part; the domain part is matched by its family.
    text = local + "@" if local and not domain else local
    if domain_text:
        text = f"{local}@{domain_text}" if local else "@" + domain_text
    return MailFragment(raw, text, family, domain_text, domain if family else "")


@dataclass(frozen=True)
class JoinedRange:
    """When the person joined, as they remember it: a year or a range of months."""

    raw: str
    first: str  # "YYYY-MM"
    last: str  # "YYYY-MM", inclusive

    def contains(self, month: str | None) -> bool:
        return month is not None and self.first <= month <= self.last

    @property
    def narrow(self) -> bool:
        """At most :data:`JOINED_EVIDENCE_MONTHS` months: narrow enough to count as evidence."""
        return self.months <= JOINED_EVIDENCE_MONTHS

    @property
    def months(self) -> int:
        fy, fm = map(int, self.first.split("-"))
        ly, lm = map(int, self.last.split("-"))
        return (ly - fy) * 12 + lm - fm + 1


_MONTH = re.compile(r"^(\d{4})(?:-(\d{1,2}))?$")


def parse_joined(raw: str) -> JoinedRange:
    """``2006``, ``2006-04`` or ``2006-04..2007-03``; a usage error otherwise."""
    text = fold(raw)
    first_text, sep, last_text = text.partition("..")
    first, last = _month_bounds(first_text, raw), _month_bounds(last_text if sep else first_text,
                                                                 raw)
    if first[0] > last[1]:
        raise UsageError(f"--joined {raw!r}: the range ends before it starts")
    return JoinedRange(raw, first[0], last[1])


def _month_bounds(text: str, raw: str) -> tuple[str, str]:
    match = _MONTH.match(text.strip())
    if not match:
        raise UsageError(f"--joined {raw!r}: give a year (2006), a month (2006-04) or a range "
                         "(2006-04..2007-03)")
    year, month = int(match.group(1)), match.group(2)
    if not 1990 <= year <= 2100 or (month is not None and not 1 <= int(month) <= 12):
        raise UsageError(f"--joined {raw!r}: no such year or month")
    if month is None:
        return f"{year:04d}-01", f"{year:04d}-12"
    return f"{year:04d}-{int(month):02d}", f"{year:04d}-{int(month):02d}"


@dataclass(frozen=True)
class Remembered:
    """Everything the caller remembered, folded, with the evidence it is worth."""

    mail: tuple[MailFragment, ...] = ()
    nickname: str | None = None
    joined: JoinedRange | None = None
    texts: tuple[str, ...] = ()

    @property
    def families(self) -> set[str]:
        return {m.family for m in self.mail if m.family}

    def fragments(self) -> list[tuple[str, str]]:
        """(kind, folded text) of every fragment searched for as text (mail, nickname, text)."""
        found = [("mail", m.text) for m in self.mail if m.text]
        if self.nickname:
            found.append(("nickname", self.nickname))
        found += [("text", t) for t in self.texts]
        return found

    def evidence_possible(self) -> int:
        """Evidence points the search could reach if every fragment matched (see
        :func:`evidence_points`): below :data:`MIN_EVIDENCE`, no candidate can be listed."""
        return evidence_points([(k, t, 1.0) for k, t in self.fragments()],
                               joined=self.joined is not None and self.joined.narrow)


def remembered(mail: Sequence[str] = (), nickname: str | None = None,
               joined: str | None = None, texts: Sequence[str] = ()) -> Remembered:
    """Parse and check what the caller remembered: a usage error for a fragment too short to
    search (enumeration letter by letter), too long, or nothing at all."""
    fragments = tuple(parse_mail_fragment(m) for m in mail)
    nick = fold(nickname) if nickname is not None else None
    folded_texts = tuple(fold(t) for t in texts)
    if not (fragments or nick or joined or folded_texts):
        raise UsageError("give something the caller remembers: --mail-fragment, --nickname, "
                         "--joined or --text")
    checks = [("--mail-fragment", m.raw, m.text) for m in fragments if m.text]
    checks += [("--nickname", nickname or "", nick)] if nick is not None else []
    checks += [("--text", raw, t) for raw, t in zip(texts, folded_texts, strict=True)]
    for option, _raw, text in checks:
        core = text.strip("@.") if text else ""
        if len(core) < MIN_FRAGMENT:
            raise UsageError(f"{option}: at least {MIN_FRAGMENT} characters (shorter "
                             "fragments would match a large share of all accounts)")
        if len(text or "") > MAX_FRAGMENT:
            raise UsageError(f"{option}: at most {MAX_FRAGMENT} characters")
    return Remembered(fragments, nick, parse_joined(joined) if joined else None, folded_texts)


def evidence_points(matches: Iterable[tuple[str, str, float]], joined: bool) -> int:
    """Evidence from fragments that matched ((kind, fragment, score) each): one point per
    distinct fragment, two for a mail fragment of :data:`STRONG_FRAGMENT` characters or more
    matched whole; one for a join date in the remembered range. A carrier domain is worth
    nothing: it is shared by millions."""
    points, seen = 0, set[tuple[str, str]]()
    for kind, text, score in sorted(matches, key=lambda m: -len(m[1])):  # longest counts
        # Overlapping fragments of one kind ("taro" and "aro1") are one memory, not two.
        if score < MATCH_THRESHOLD or any(k == kind and (t in text or text in t)
                                          for k, t in seen):
            continue
        seen.add((kind, text))
        strong = kind == "mail" and len(text.strip("@.")) >= STRONG_FRAGMENT and score >= 1.0
        points += 2 if strong else 1
    return points + int(joined)


# --- a candidate and why -----------------------------------------------------------------------


@dataclass
class Candidate:
    """One account that matched, with its score and masked evidence."""

    user: str
    score: float = 0.0
    points: int = 0
    evidence: list[str] = field(default_factory=list)
    joined: str | None = None  # year-month

    def as_dict(self) -> dict[str, object]:
        return {"user": self.user, "score": round(self.score, 2), "evidence": self.evidence,
                "joined": self.joined}


@dataclass(frozen=True)
class AccountFacts:
    """What the search read of one account: its addresses (current first), nickname, join
    month and the remembered texts that matched a fragment, each with its source name."""

    user: str
    addresses: tuple[tuple[str, str | None, bool], ...]  # (address, month, current)
    nickname: str | None
    joined: str | None
    texts: tuple[tuple[str, str], ...]  # (source name, text)


def score_account(facts: AccountFacts, memory: Remembered) -> Candidate:
    """Score one account against what was remembered; the evidence masked."""
    cand = Candidate(facts.user, joined=facts.joined)
    matched: list[tuple[str, str, float]] = []
    for fragment in memory.mail:
        best, where = 0.0, ""
        for address, month, current in facts.addresses:
            folded = fold(address)
            family_ok = (fragment.family is None
                         or carrier_family(folded.rpartition("@")[2]) == fragment.family)
            if not family_ok:
                continue
            score = fragment_score(fragment.text, folded) if fragment.text else 1.0
            # equal scores: the address on the domain the person remembered is the evidence
            if score > best or (score == best > 0 and fragment.hint
                                and fragment.hint in folded.rpartition("@")[2]):
                when = "current" if current else f"past, until {month}" if month else "past"
                best, where = score, f"{mask_address(address)} ({when})"
        if fragment.text and best >= MATCH_THRESHOLD:
            matched.append(("mail", fragment.text, best))
            how = "contains" if best >= 1.0 else f"~{best:.2f}"
            cand.evidence.append(f"mail {mask_text(fragment.text, 2)!s} {how} {where}")
            cand.score += best * (2.0 if len(fragment.text) >= STRONG_FRAGMENT else 1.0)
        elif not fragment.text and best > 0:
            cand.evidence.append(f"carrier {fragment.family}: {where}")
            cand.score += 0.25
    if memory.nickname and facts.nickname:
        score = fragment_score(memory.nickname, fold(facts.nickname))
        if score >= MATCH_THRESHOLD:
            matched.append(("nickname", memory.nickname, score))
            cand.evidence.append(f"nickname {mask_text(facts.nickname)} "
                                 f"{'contains' if score >= 1.0 else f'~{score:.2f}'}")
            cand.score += score
    for text in memory.texts:
        best, source = 0.0, ""
        for name, value in facts.texts:
            score = fragment_score(text, fold(value))
            if score > best:
                best, source = score, f"{name} {mask_text(value, 2)}"
        if best >= MATCH_THRESHOLD:
            matched.append(("text", text, best))
            cand.evidence.append(f"text {mask_text(text, 1)} in {source}")
            cand.score += best
    joined_ok = memory.joined is not None and memory.joined.contains(facts.joined)
    if joined_ok:
        cand.evidence.append(f"joined {facts.joined}")
        cand.score += 0.5
    cand.points = evidence_points(matched, joined=joined_ok and memory.joined is not None
                                  and memory.joined.narrow)
    return cand
