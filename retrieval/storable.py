"""What extraction may store: the user's own words about themself, never material they passed along.

Two rules, used by every extractor (the offline rules and the model-backed one):

- :func:`mask_quoted` replaces, in one user turn, every region that is material the user quoted,
  pasted or forwarded with :data:`PLACEHOLDER`, before any sentence is read: fenced code blocks
  (```` ``` ```` and ``~~~``), indented code blocks, lines starting with ``>``, everything from a mail
  client's forward or reply marker ("-----Original Message-----", "---------- Forwarded message
  ---------", "Begin forwarded message:", "On ... wrote:") or from a block of mail header lines
  ("From: / Sent: / To: / Subject:") to the end of the turn, and text introduced by a request to
  process it ("summarize / translate / proofread / reply to ... this ...", "here is the email:",
  "my boss wrote:"). Such introduced material runs to the end of the turn, unless it is itself a
  delimited block (a fence, quoted lines, a quotation): then the block is the material and what
  follows it is the user's again. "... the above" makes everything before the request material.
  A sentence that touches a masked region is never a preference. Text in quotation marks or
  inline code is never read for a statement: a statement must be made outside the quotation
  marks ("I love 'Star Wars'" is one; "Translate 'I hate cats'" is not).
- :func:`refusal` names why a statement must not be stored even when the user says it in the first
  person: it carries a URL or link, an e-mail address, a credential or secret, asks about or for
  the system prompt or the assistant's instructions, tells the assistant to ignore its
  instructions, asks it to send / forward / post / share something, or hides text in invisible
  Unicode. :func:`is_storable` is its boolean.

Every word list and pattern below says where it comes from; none is derived from an evaluation set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDER = "[quoted material omitted]"

# -- regions of a turn that are material, not the user's statements -----------------------------

# CommonMark: a fence is 3+ backticks or tildes, indented at most 3 spaces; it closes on a line of
# the same character, at least as long; an unclosed fence runs to the end of the text
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# CommonMark: an indented code block is lines indented 4+ spaces (or a tab), after a blank line
_INDENTED = re.compile(r"^(?: {4}|\t)")
# Markdown and e-mail quoting (RFC 3676 "quoted lines"): a line starting with ">"
_QUOTE_LINE = re.compile(r"^ {0,3}>")
# common mail-client forward and reply markers (Outlook, Thunderbird, Gmail, Apple Mail)
_MAIL_MARKER = re.compile(
    r"^\s*(?:-{2,}\s*original\s+message\s*-{2,}|-{2,}\s*forwarded\s+message\s*-{2,}|"
    r"begin\s+forwarded\s+message\s*:|on\s.{4,200}\swrote\s*:\s*$|_{10,}\s*$)",
    re.IGNORECASE,
)
# RFC 5322 section 3.6 header field names (plus Outlook's "Sent:" for the date), as mail clients
# print them above a forwarded or replied message; two such lines in a row start a mail
_MAIL_HEADER = re.compile(
    r"^\s*\*{0,2}(?:from|sent|date|to|cc|bcc|subject|reply-to|sender|message-id)\*{0,2}\s*:", re.IGNORECASE
)

# general English usage: verbs that ask the assistant to process a text the user supplies
_PROCESS_VERB = (
    r"summari[sz]e|sum\s+up|tl;?dr|translate|proof-?read|re-?write|rephrase|paraphrase|reword|edit|"
    r"correct|fix|improve|polish|shorten|condense|simplify|expand\s+on|reply\s+to|respond\s+to|answer|"
    r"analy[sz]e|review|critique|check|grade|evaluate|assess|explain|interpret|classify|categori[sz]e|"
    r"extract|format|convert|draft|write|compose|make|turn|read|look\s+(?:at|over)|go\s+over|"
    r"what\s+do\s+you\s+(?:think|make)\s+of|thoughts\s+on|what\s+does"
)
# general English usage: how a request starts: a sentence or clause start, or a polite frame
_LEAD = (
    r"(?:^|(?<=[\n.!?;:,])[ \t]*|\b(?:(?:can|could|would|will)\s+you|you\s+to|please|kindly|help\s+me)\s+)"
)
# general English usage: words that point at the material ("this email", "the text below")
_POINTER = r"\b(?:this|these|the\s+following|following|below|attached|enclosed|pasted)\b"
_REQUEST = rf"{_LEAD}(?:please\s+)?\b(?:{_PROCESS_VERB})\b"
_REQUEST_COLON = re.compile(rf"{_REQUEST}[^.!?\n:]{{0,120}}:", re.I)
_REQUEST_POINTER = re.compile(rf"{_REQUEST}[^.!?\n:]{{0,120}}?{_POINTER}", re.I)
_REQUEST_ABOVE = re.compile(
    rf"{_REQUEST}[^.!?\n:]{{0,120}}?\b(?:above|preceding|previous)\b[^.!?\n]*[.!?]?", re.I
)
# general English usage: kinds of written material a user passes along
_MATERIAL = (
    r"e-?mails?|messages?|texts?|letters?|notes?|documents?|docs?|articles?|posts?|comments?|reviews?|"
    r"essays?|paragraphs?|passages?|drafts?|repl(?:y|ies)|responses?|code|snippets?|scripts?|transcripts?|"
    r"threads?|chats?|conversations?|stor(?:y|ies)|poems?|lyrics|excerpts?|quotes?|tweets?|outputs?|logs?|"
    r"errors?|contracts?|reports?|memos?|announcements?|descriptions?|summary|abstract|content|sentences?"
)
# general English usage: phrases that introduce material ("here is the email:", "Bob wrote:")
_INTRO = re.compile(
    r"\b(?:here\s+is|here'?s|here\s+are|below\s+is|below\s+are|attached\s+is|the\s+following\s+(?:is|are))"
    rf"\b[^.!?\n:]{{0,60}}?\b(?:{_MATERIAL})\b[^.!?\n:]{{0,40}}(?::|[ \t]*$)|"
    r"\b(?:wrote|writes|said|says|sent(?:\s+me)?|posted|replied|texted|messaged|forwarded)"
    r"(?:\s+(?:me|us|this|the\s+following))?\s*:",
    re.I | re.M,
)
_SENTENCE_REST = re.compile(r"[^.!?\n:]*[.!?:]?")

# quotation marks of English and European typography; a double quote opens only after a non-word
# character (so 5'11" is a height); an unclosed double quote runs to the end of the text. A single
# quote is also the English apostrophe: it opens only after a non-word character and not before a
# common elision ('cause, 'em, 'til, 'tis, rock 'n' roll, the '90s), and its span stays in one sentence
_QUOTED = re.compile(
    r"(?<![\w\"])\"([^\"]*)(?:\"|$)|\u201c([^\u201d]*)(?:\u201d|$)|"
    r"\u00ab([^\u00bb]*)(?:\u00bb|$)|\u201e([^\u201c\u201d]*)(?:[\u201c\u201d]|$)|"
    r"(?<![\w'])'(?!(?:cause|cos|em|til|tis|twas|n|round|\d0s)\b)(?=\S)([^'\n.!?]*[^'\s.!?][.!?,]?)'(?!\w)|"
    r"`(?P<code>[^`\n]+)`"
)
# private-use characters (never text a user means) that stand for the n-th quotation while the
# user's own words are read: ``\ue000<n>\ue001``
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


def _mask_lines(text: str) -> str:
    """Fences, indented code, quoted lines, and forwarded or replied mail to the end of the turn."""
    lines = text.split("\n")
    out: list[str] = []
    fence = ""
    code = False
    for n, line in enumerate(lines):
        blank = not line.strip()
        if fence:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = ""
            continue
        opened = _FENCE_OPEN.match(line)
        nxt = lines[n + 1] if n + 1 < len(lines) else ""
        if _MAIL_MARKER.match(line) or (_MAIL_HEADER.match(line) and _MAIL_HEADER.match(nxt)):
            out.append(PLACEHOLDER)
            break
        prev_blank = n == 0 or not lines[n - 1].strip()
        code = not blank and bool(_INDENTED.match(line)) and (prev_blank or code)
        if opened:
            fence = opened.group(1)
        if opened or code or _QUOTE_LINE.match(line):
            if not out or out[-1] != PLACEHOLDER:
                out.append(PLACEHOLDER)
            continue
        out.append(line)
    return "\n".join(out)


def _mark_quotations(text: str, quotations: list[str]) -> str:
    def repl(m: re.Match[str]) -> str:
        quotations.append(m.group(0))
        return f"{_OPEN}{len(quotations) - 1}{_CLOSE}"

    return _QUOTED.sub(repl, text)


def _mask_requests(text: str) -> str:
    """Material introduced by a request to process it: to the end of the turn, or only the block
    that follows when that block is delimited; "... the above" makes what precedes it material."""
    above = max(_REQUEST_ABOVE.finditer(text), key=lambda m: m.start(), default=None)
    start = above.end() if above is not None else 0
    head = PLACEHOLDER + "\n" if above is not None else ""
    found = [m for m in (p.search(text, start) for p in (_REQUEST_COLON, _REQUEST_POINTER, _INTRO)) if m]
    if not found:
        return head + text[start:]
    first = min(found, key=lambda m: m.start())
    after = first.end()
    if first.re is _REQUEST_POINTER:  # "proofread the paragraph below:": the material follows the sentence
        rest_of_sentence = _SENTENCE_REST.match(text, after)
        after = rest_of_sentence.end() if rest_of_sentence is not None else after
    block = text[after:].lstrip(" \t\n")
    quotation = _MARK.match(block)
    if block.startswith(PLACEHOLDER):
        rest = block[len(PLACEHOLDER) :]
    elif quotation is not None:
        rest = block[quotation.end() :]
    else:
        rest = ""
    before = text[start : first.start()]
    # a request that starts a sentence leaves the sentence before it whole; one inside a sentence
    # takes its sentence with it
    sep = "\n" if not before.strip() or before.rstrip()[-1] in ".!?" else " "
    return head + before + sep + PLACEHOLDER + ("\n" + rest if rest.strip() else "")


@dataclass(frozen=True)
class Masked:
    """One user turn with the material masked out.

    ``text`` holds the user's own words: each region of material is :data:`PLACEHOLDER`, and each
    inline quotation or code span stands as a marker, so that a statement is read only from words
    outside quotation marks ("Translate 'I hate cats'" states nothing). :meth:`restore` puts the
    quotations back into a sentence read from ``text`` ("I love 'Star Wars'" keeps its title).
    """

    text: str
    quotations: tuple[str, ...]

    def restore(self, text: str) -> str:
        return _MARK.sub(lambda m: self.quotations[int(m.group(1))], text)

    @property
    def shown(self) -> str:
        """The turn as the user wrote it, less the material: what a model extractor is given."""
        return self.restore(self.text)


def mask_quoted(text: str) -> Masked:
    """``text`` (one user turn) with every quoted, pasted or forwarded region masked (see the
    module's docstring); the user's own sentences are left as they were."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2018", "'").replace("\u2019", "'")
    text = text.replace(_OPEN, "").replace(_CLOSE, "")
    quotations: list[str] = []
    return Masked(_mask_requests(_mark_quotations(_mask_lines(text), quotations)), tuple(quotations))


# -- statements that are never stored, even in the first person ------------------------------------

_REFUSE: tuple[tuple[str, re.Pattern[str]], ...] = (
    # RFC 5322 addr-spec (dot-atom form)
    ("email address", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    # RFC 3986 URIs with a scheme, "www." hosts, host/path, dotted IPv4 (RFC 791), Markdown links,
    # host names under RFC 1591's generic TLDs, RFC 2606's reserved names and a few common TLDs,
    # and the general English words for a link
    (
        "link",
        re.compile(
            r"\b[a-z][a-z0-9+.-]*://|\b(?:mailto|javascript|tel):|\bdata:\w+/|\bwww\.|\b(?:[a-z0-9-]+\.)+[a-z]{2,}/|"
            r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\]\(|\b(?:[a-z0-9-]+\.)+(?:com|org|net|edu|gov|mil|int|info|biz|"
            r"io|co|me|ly|app|dev|xyz|example|test|invalid|localhost)\b|\b(?:hyper)?links?\b|\burls?\b|"
            r"\bclick\s+here\b",
            re.I,
        ),
    ),
    # general English names of secrets, and the documented formats of common API keys: OpenAI
    # "sk-", GitHub "ghp_/gho_/ghu_/ghs_/ghr_", AWS access key ids "AKIA", Slack "xox?-", PEM keys
    # (RFC 7468)
    (
        "credential",
        re.compile(
            r"\b(?:pass(?:word|phrase|code)s?|pass\s+words?|credentials?|api[\s_-]*keys?|secret[\s_-]*keys?|"
            r"access[\s_-]*keys?|private[\s_-]*keys?|(?:access|auth|bearer|session|refresh|api|secret)[\s_-]*"
            r"tokens?|one[\s-]*time\s+(?:code|password)s?|2fa\s+codes?|security\s+codes?)\b|"
            r"\bsk-[\w-]{8,}|\bgh[pousr]_\w{8,}|\bAKIA[0-9A-Z]{12,}|\bxox[abpr]-|-----BEGIN [A-Z ]*KEY-----",
            re.I,
        ),
    ),
    # OWASP LLM01 (prompt injection) and LLM07 (system prompt leakage): the prompt, the instructions
    # or a mode of the assistant, or setting them aside
    (
        "instructions",
        re.compile(
            r"\b(?:system|developer|initial|hidden|secret|internal)\s+(?:prompts?|messages?|instructions?|"
            r"rules)\b|\b(?:your|the\s+assistant'?s?)\s+(?:prompts?|instructions?|rules|guidelines|directives|"
            r"configuration|programming)\b|"
            r"\b(?:ignore|disregard|forget|override|bypass|skip)\s+(?:(?:all|any|the|your|every|of|previous|"
            r"prior|above|earlier|preceding|other|existing|original|safety)\s+)*(?:instructions?|prompts?|"
            r"rules|directions|guidelines|directives|constraints|guardrails)\b|\bnew\s+instructions?\b|"
            r"\bprompt\s+injection\b|\bjailbr[eo]\w*|\bdeveloper\s+mode\b|\byou\s+are\s+now\b",
            re.I,
        ),
    ),
    # Unicode tag characters ("ASCII smuggling"), bidirectional controls (CVE-2021-42574, "Trojan
    # Source") and zero-width characters hide text from a human reader (OWASP LLM01)
    ("hidden text", re.compile("[\U000e0000-\U000e007f\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2060\ufeff]")),
    ("quoted material", re.compile(re.escape(PLACEHOLDER))),
)
# OWASP LLM01 and LLM06 (excessive agency): an action towards others asked of the assistant.
# General English verbs of sending and disclosing; the statement must address the assistant (a
# word naming it or its output, or an imperative), and a negated verb ("never share my data") is a
# restriction, not a request. "I forward my mail to my partner", about the user's own habits, passes.
_ACTION_VERBS = (
    r"send|sends|sent|sending|forward(?:s|ed|ing)?|e-?mail(?:s|ed|ing)?(?=\s+(?:it|this|them|that|to|a\s+copy|"
    r"copies|everything)\b)|post(?:ed|ing)?(?=\s+(?:it|this|them|that|to|on|your|my|the|a|an|every|each|all)\b)|publish\w*|upload\w*|"
    r"share[sd]?|sharing|tweet\w*|notify\w*|disclose\w*|reveal\w*|leak\w*|exfiltrat\w*|transmit\w*|cc|bcc"
)
_ACTION = re.compile(rf"\b(?:{_ACTION_VERBS})\b", re.I)
_ADDRESSED = re.compile(
    r"\b(?:you|your|yourself|assistant|answers?|responses?|replies|outputs?|chats?|conversations?|"
    rf"transcripts?)\b|^\s*(?:please\s+)?(?:always\s+)?(?:{_ACTION_VERBS})\b",
    re.I,
)
# general English negation before a verb
_NEGATED = re.compile(r"\b(?:not|never|no|don'?t|doesn'?t|won'?t|without|avoid|stop)\s+(?:\w+\s+){0,2}$", re.I)
# a long run of letters and digits reads as a key or a token (no English word is 32 letters long)
_TOKEN = re.compile(r"[\w-]{32,}")


def _asks_action(text: str) -> bool:
    if not _ADDRESSED.search(text):
        return False
    return any(not _NEGATED.search(text[: m.start()]) for m in _ACTION.finditer(text))


def refusal(text: str) -> str | None:
    """Why ``text`` must not be stored as a preference (``"link"``, ``"credential"``...), or None."""
    for reason, pattern in _REFUSE:
        if pattern.search(text):
            return reason
    if any(re.search(r"\d", t) and re.search(r"[A-Za-z]", t) for t in _TOKEN.findall(text)):
        return "credential"
    if _asks_action(text):
        return "action towards others"
    return None


def is_storable(text: str) -> bool:
    """True when ``text`` may be stored as the user's preference (see :func:`refusal`)."""
    return refusal(text) is None
