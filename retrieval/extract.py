"""Finding preferences in a conversation: the ``Extractor`` protocol and the offline rule extractor.

The rule extractor needs no model. It reads user turns only and keeps first-person statements of
a lasting preference ("I prefer...", "I can't stand...", "I'm allergic to...", "I have a gluten
intolerance", "I always/never...", "please don't..."), normalised to one first-person sentence,
and the everyday idioms that say the same with the thing named first ("Cold weather isn't for me",
"Jazz is my favourite genre", "Spicy food and I don't get along", "Crowds stress me out") or with
the speaker as a kind of person ("I'm more of a tea person", "I'm not much of a reader"; "I'm
someone who likes X" is kept as "I like X"). Every verb, idiom and word list here is general
English usage, written from grammar and common idiom; none is taken from an evaluation set (the
families and their look-alikes are tests/unit/test_extraction_families.py, sentences written for it).
Implicit preferences get one offline rule: a user picking one of the options an assistant just
listed ("the second one sounds good, the others don't work for me") is stored whole, the chosen
option and those turned down (:func:`choice_text`); recall injects it shorter
(:func:`retrieval.packing.compact`).
The options may be numbered ("1. ... 2. ...") or one sentence ("You could A, B, C, or D"); the
pick is named by its number ("option 2", "the first one") or by words it shares with one option.

A statement whose object only refers without naming ("the other options don't appeal to me", "I
don't like that one") is not kept: out of its conversation it says nothing (:func:`objectless`).

Only the user's own words count: quoted, pasted or forwarded material is masked out of each user
turn before any sentence is read, and a statement that asks for links, credentials, the system
prompt or actions towards others is never kept (:mod:`retrieval.storable`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from retrieval.storable import PLACEHOLDER, Masked, is_storable, mask_quoted

Turn = Mapping[str, str]  # {"role": "user" | "assistant" | ..., "content": str}
Polarity = Literal["positive", "negative", "neutral"]


@dataclass(frozen=True)
class Extracted:
    text: str  # a normalised first-person statement
    kind: str  # "explicit" | "implicit"
    turn: int  # index of the turn it came from
    polarity: Polarity
    subject: str  # what the preference is about ("gluten", "horror movies")


@runtime_checkable
class Extractor(Protocol):
    def extract(self, turns: Sequence[Turn]) -> list[Extracted]: ...


# adverbs between "I" and the verb: any -ly adverb (intensifiers, hedges: "thoroughly", "genuinely"),
# repeated or comma-separated ("really, really"), and a few others that are not -ly words
_ADV = r"(?:(?:(?!only\b)\w+ly|much|very\s+much|always|also|just|still|will|would|can|tend\s+to|try\s+to|"
_ADV += r"prefer\s+to|so|too)\s*,?\s+)*"
_CONDITION = (
    r"allerg\w*|intoleran\w*|aversion|dislike|fear|phobia|sensitivit\w*|preference|"
    r"condition|disorder|issues?|problems?|restrictions?|diet|distaste|disdain|disability|anxiety|"
    r"tolerance|sensitive\s+\w+|stance\s+against|objections?"
)
# what happens to the speaker, not what they choose: "I always forget ...", "I always get confused ..."
_LAPSE = (
    r"(?!forget\w*|forgot|struggle\w*|mix\w*\s+up|get\s+(?:confused|lost|stuck)|end\s+up|wonder\w*|seem\w*|"
    r"have\s+(?:trouble|problems?|issues?|difficulty))"
)
_NEG_VERBS = (
    # "I hate to bother you" is a courtesy, not an aversion
    r"hate(?!\s+to\s+(?:bother|ask|say|admit|interrupt|trouble|disturb|rush|complain|be\s+that))|"
    r"dislike|detest|despise|loathe|abhor|shun|resent|avoid|dread|shy\s+away\s+from|can'?t\s+bear|"
    # a conditional refusal ("I'd never set foot on a cruise"); "I'd never seen ..." is a past perfect
    r"would\s+never\s+(?!have\b)\w+|'d\s+never\s+(?!have\b|been\b|had\b|\w+ed\b|\w+en\b|seen\b|heard\b|"
    r"thought\b|known\b|done\b|gone\b|met\b|felt\b|found\b|got\b|made\b|read\b|said\b|told\b|flown\b|worn\b)\w+|"
    r"tend\s+not\s+to\s+(?!be\b)\w+|(?:steer|keep)\s+away\s+from|stay\s+clear\s+of|"
    # an effort to do without ("I'm trying to cut back on sugar")
    r"(?:am|'m)\s+trying\s+to\s+(?:avoid|cut\s+(?:down|back)|limit|reduce|quit|give\s+up|"
    r"stay\s+away|steer\s+clear)|cut\s+(?:down|back)\s+on|(?:am|'m)\s+cutting\s+(?:down|back)\s+on|"
    r"(?:grown|gotten|got|become)\s+(?:\w+\s+)?(?:tired|sick|bored|weary)\s+of|"
    r"(?:am|'m)\s+(?:\w+ly\s+)?(?:terrible|hopeless|awful|useless|not\s+good)\s+(?:with|at)|"
    r"(?:am|'m)\s+not\s+much\s+of\s+an?|"
    r"cannot\s+bear|can'?t\s+stand|cannot\s+stand|can'?t\s+handle|"
    r"(?:am|'m)\s+(?:\w+ly\s+)?not\s+(?:\w+ly\s+)?(?:fond|keen|big\s+on|into|partial|crazy|wild|a\s+fan)|"
    r"(?:am|'m)\s+(?:\w+ly\s+)?(?:wary|tired|sick|weary|afraid|scared|terrified|frightened)\s+of|"
    r"(?:am|'m)\s+(?:put|turned)\s+off\s+by|"
    r"(?:have|'ve)\s+never\s+(?:\w+ly\s+)?(?:liked|enjoyed|loved|cared\s+for|been\s+(?:a\s+fan|into|keen))|"
    r"(?:wouldn'?t|would\s+not|would\s+never)\s+(?:\w+ly\s+)?(?:enjoy|like|want|choose|pick|eat|wear|watch)|"
    r"need\s+to\s+(?:avoid|stay\s+away|steer\s+clear|limit|cut\s+(?:down|back))|"
    r"no\s+longer\s+\w+|"
    r"can'?t\s+tolerate|cannot\s+tolerate|refuse\s+to|steer\s+clear\s+of|stay\s+away\s+from|"
    r"(?:do\s+not|don'?t|never|no\s+longer|won'?t|will\s+not|can'?t|cannot)\s+"
    r"(?:\w+\s+)?(?:like|enjoy|eat|drink|wear|use|watch|play|care\s+for|consume|buy|listen|read|"
    r"fly|drive|travel|stay|go|do|participate|engage|support|own|trust|touch|allow)|"
    r"(?:am|'m)\s+(?:\w+\s+)?(?:opposed|averse|uncomfortable|against|not\s+a\s+fan)|get\s+(?:\w+\s+)?"
    r"(?:uncomfortable|sick|sickness|seasick|carsick|airsick|headaches?|migraines?|nauseous|queasy|anxious|nervous|bored|"
    r"overwhelmed|stressed)|need\s+to\s+avoid|must\s+avoid|"
    r"am\s+not\s+(?:a\s+(?:big\s+)?fan|interested|into|comfortable|keen)|'m\s+not\s+"
    r"(?:a\s+(?:big\s+)?fan|interested|into|comfortable|keen)|have\s+no\s+interest|"
    r"(?:do\s+not|don'?t)\s+want\s+any|"
    r"find\s+[\w\s-]{1,40}?\s+(?:too\s+\w+|disorienting|distressing|overstimulating|boring|ineffective|unappealing|overwhelming|distracting|"
    r"uncomfortable|difficult|hard|annoying|tedious|off-?putting|stressful|unpleasant)"
)
_POS_VERBS = (
    r"prefer|love|like|enjoy|adore|favou?r|appreciate|relish|cherish|treasure|savou?r|"
    r"gravitate\s+to(?:wards?)?|lean\s+towards?|go\s+out\s+of\s+my\s+way\s+to|"
    r"(?:'d|would)\s+(?:much\s+)?rather|"
    r"(?:am|'m)\s+(?:\w+ly\s+)?(?:drawn|partial|attracted|devoted|addicted)\s+to|"
    r"(?:am|'m)\s+(?:\w+ly\s+)?(?:crazy|mad|passionate|enthusiastic)\s+about|"
    r"(?:am|'m)\s+(?:a|an)\s+(?:\w+\s+)?(?:fan|lover|enthusiast|admirer|devotee)\s+of|"
    r"rely\s+on|depend\s+on|(?:always|usually|generally|typically|often|mostly)\s+look\s+for|seek\s+out|"
    r"stick\s+with|swear\s+by|"
    r"(?:go|opt)\s+for\s+(?!it\b|that\b|this\b|them\b|one\b|a\s+(?:run|walk|jog|swim|ride|drive|coffee|drink)\b)|"
    # what one picks over another ("I'd pick a quiet cabin over a busy resort")
    r"(?:'d|would)\s+(?:\w+ly\s+)?(?:pick|choose|take|go\s+for|opt\s+for)\s+(?=[^.!?]{1,80}?\bover\b)|"
    r"(?:'d|would)\s+love\s+to\s+(?:try|explore|visit|see|eat|read|watch)\s+more\b|"
    r"'ll\s+(?:\w+ly\s+)?(?:pick|choose|take)\s+(?=[^.!?]{1,80}?\bover\b)|(?:'d|would)\s+(?:much\s+|far\s+)?(?:prefer|sooner)|"
    r"(?:am|'m)\s+(?:\w+ly\s+|so\s+|very\s+)?(?:fond\s+of|big\s+on|huge\s+on)|can'?t\s+get\s+enough\s+of|"
    r"(?:am|'m)\s+always\s+(?:up\s+for|game\s+for|on\s+the\s+lookout\s+for)|(?:am|'m)\s+(?:\w+ly\s+)?happiest\s+"
    r"(?:when|with|in|near|at|on|outdoors)|"
    r"(?:'ve|have)\s+been\s+(?:an?\s+)?(?:vegan|vegetarian|pescatarian|teetotal\w*|sober|[a-z]+-free)\b|"
    # a habit of choosing, said with its frequency ("I usually skip breakfast", "I mostly shop online")
    r"(?:usually|mostly|generally|typically|normally|often|rarely|seldom|hardly\s+ever|rarely\s+ever)\s+(?:skip|buy|shop|order|book|wear|eat|drink|"
    r"read|watch|listen\s+to|play|cook|take|travel|fly|drive|choose|pick|use|stay|pack|walk|cycle|bike)\b|"
    r"(?:am|'m)\s+(?:\w+ly\s+)?(?:obsessed|hooked|smitten|enamou?red|in\s+love)\s+with|"
    r"(?:am|'m)\s+(?:\w+ly\s+)?(?:picky|particular|fussy|choosy|selective)\s+about|"
    r"(?:am|'m)\s+(?:a|an)\s+(?:\w+\s+)?(?:believer\s+in|sucker\s+for)|"
    r"have\s+(?:a|an)\s+(?:\w+\s+)?(?:soft\s+spot|weakness|penchant|taste|fondness|liking|passion)\s+for|"
    r"(?:need|require)\s+(?!help\b|to\b|you\b|your\b|some\s+(?:help|advice|ideas|information)\b|advice\b|"
    r"information\b|assistance\b|an?\s+(?:answer|list|summary|plan|recommendation|suggestion|quick|few|"
    r"flight|ticket|hotel|reservation|ride|way)\b|"
    # something made for the asker (a document or text, whatever its kind): a request, not a need
    r"(?:an?|some|the)\s+(?:[\w-]+\s+){0,2}(?:list|plan|letter|email|essay|report|poem|story|script|recipe|itinerary|"
    r"outline|draft|template|summary|answer|caption|slogan|title|speech|presentation|resume|cv|proposal|schedule)s?\b)|"
    rf"only\s+\w+|always\s+{_LAPSE}\w+|exclusively\s+\w+|"
    r"learn\s+best|am\s+(?:\w+ly\s+)?(?:a\s+(?:big\s+)?fan|passionate|into|keen)|'m\s+(?:\w+ly\s+)?(?:a\s+(?:big\s+)?fan|"
    r"passionate|into|keen|fascinated|only\s+interested)|am\s+(?:fascinated|only\s+interested)|"
    r"follow\s+an?|stick\s+to|adhere\s+to|prioriti[sz]e|believe\s+in|value|care\s+(?:a\s+lot\s+)?about|"
    r"(?:am|'m)\s+on\s+an?\s+[\w-]+(?:\s+[\w-]+)?\s+diet|"
    r"am\s+(?:a\s+)?(?:vegan|vegetarian|pescatarian|teetotal\w*|sober|diabetic|celiac|coeliac|"
    r"lactose|allergic|sensitive|pregnant|afraid|scared|terrified|claustrophobic)|"
    r"'m\s+(?:an?\s+)?(?:[\w-]+\s+)?(?:vegan|vegetarian|pescatarian|teetotal\w*|sober|diabetic|celiac|coeliac|"
    r"lactose|allergic|sensitive|pregnant|afraid|scared|terrified|claustrophobic)|"
    # a diet named by what it leaves out, or by its rule ("I'm gluten-free", "I'm kosher")
    r"(?:am|'m)\s+(?:\w+ly\s+)?(?:[a-z]+-free|kosher|halal|keto|paleo|plant-based)\b|"
    rf"have\s+(?:a|an|some|severe|serious)?\s*(?:[\w-]+\s+){{0,5}}(?:{_CONDITION})|suffer\s+from|"
    rf"(?:only|always|exclusively|strictly)\s+{_LAPSE}\w+"
)
_STATEMENT = re.compile(
    rf"\bI\s*(?:'ve\s+|have\s+)?{_ADV}(?P<neg>{_NEG_VERBS})\b|\bI\s*{_ADV}(?P<pos>{_POS_VERBS})\b|"
    r"\b(?P<neg2>don'?t|do\s+not|doesn'?t|does\s+not)\s+(?:really\s+)?(?:interest|appeal\s+to|agree\s+with|"
    r"sit\s+well\s+with|suit)\s+me\b",
    re.IGNORECASE,
)
# evaluative words: a belief about how things are best done is a preference ("I think X is best");
# a belief about a fact is not ("I think the answer is 42")
_EVALUATIVE = (
    r"\b(?:best|better|beats?|worse|worst|should(?:n'?t)?|ought|good\s+for|bad\s+for|healthier|worth|"
    r"overrated|underrated|essential|important|matters?|superior|inferior|the\s+(?:only\s+)?way\s+to|waste\s+of)\b"
)
_NOT_ABOUT_ME = (
    r"(?!you\b|your\b|it\b|this\b|that\b|these\b|those\b|there\b|we\b|he\b|she\b|they\b|"
    r"the\s+(?:answer|response|first|second|third|last|above|following|code|output|result)\b)"
)
_BELIEF = re.compile(
    rf"\bI\s*{_ADV}(?:believe|think|feel|(?:am|'m)\s+(?:\w+ly\s+)?(?:convinced|sure|certain))\s+"
    rf"(?:\w+ly\s+)?(?:that\s+)?{_NOT_ABOUT_ME}(?P<clause>.*{_EVALUATIVE}.*)$",
    re.IGNORECASE,
)
# general evaluative adjectives (English), for "I find X <adjective>" and "X makes me <adjective>"
_NEG_ADJ = (
    "boring|dull|tedious|exhausting|tiring|draining|stressful|annoying|irritating|overwhelming|"
    "uncomfortable|unpleasant|off-?putting|distracting|overstimulating|disorienting|distressing|"
    "frustrating|depressing|confusing|pointless|unbearable|awkward|intimidating|anxious|nervous|sick|"
    "bored|queasy|dizzy|stressed|tense|claustrophobic|scared|miserable|unappealing|ineffective"
)
_POS_ADJ = (
    "relaxing|calming|soothing|satisfying|enjoyable|fun|fascinating|inspiring|refreshing|rewarding|"
    "comforting|energi[sz]ing|motivating|delightful|charming|engaging|captivating|peaceful|happy|calm|"
    "relaxed|energi[sz]ed|useful|helpful|appealing|therapeutic|exciting|thrilling"
)
_FIND = re.compile(
    rf"\bI\s*{_ADV}find\s+{_NOT_ABOUT_ME}(?P<obj>[\w\s',-]{{2,60}}?)\s+(?:(?:\w+ly|too|very|quite|so|pretty|"
    rf"rather|a\s+bit|really)\s+)*(?P<adj>{_NEG_ADJ}|{_POS_ADJ})\b",
    re.IGNORECASE,
)
# a sentence that names its thing first, then says what the speaker makes of it
_THING_FIRST = rf"{_NOT_ABOUT_ME}(?P<obj>[A-Za-z][\w\s'-]{{1,50}}?)\s+"
_AFFECTS_ME = re.compile(
    rf"^{_THING_FIRST}(?:(?:always|often|usually|really)\s+)?"
    rf"(?:(?:makes?|leaves?)\s+me\s+(?:feel\s+)?(?:\w+ly\s+|very\s+|so\s+)?(?P<adj>{_NEG_ADJ}|{_POS_ADJ})\b|"
    r"(?:gives?)\s+me\s+(?P<ill>a\s+headache|headaches|migraines?|the\s+creeps|anxiety|nausea|hives|a\s+rash|"
    r"heartburn|nightmares|indigestion|(?:a\s+)?stomach\s*aches?|(?:the\s+)?jitters|motion\s+sickness)\b|"
    r"(?P<verb>bores?|annoys?|irritates?|scares?|frightens?|terrifies|disgusts?|overwhelms?|"
    r"relaxes|calms|delights?|excites?|fascinates?)\s+me\b|"
    # phrasal verbs of the same kind ("Crowds stress me out", "Lectures put me to sleep", "X appeals to me")
    r"(?P<negp>puts?\s+me\s+(?:to\s+sleep|off)|turns?\s+me\s+off|(?:stress|freak|gross|creep|wear|tire|bum)(?:es|s)?"
    r"\s+me\s+out|drains?\s+me|exhausts?\s+me|wears?\s+me\s+down|(?:gets?|got)\s+on\s+my\s+nerves|grates?\s+on\s+me|"
    r"(?:has|have|'s|'ve)\s+never\s+(?:really\s+)?(?:clicked|worked)\s+(?:with|for)\s+me)\b|"
    r"(?P<posp>appeals?\s+to\s+me|keeps?\s+me\s+hooked|clicks?\s+with\s+me|makes?\s+my\s+day|cheers?\s+me\s+up|"
    r"lifts?\s+my\s+(?:mood|spirits)|energi[sz]es\s+me|"
    r"puts?\s+me\s+at\s+ease|suits?\s+me)\b)",
    re.IGNORECASE,
)
# stance openers that may come before a sentence's subject (general English discourse markers)
_OPENER = r"(?:(?:honestly|frankly|personally|generally|to\s+be\s+honest|in\s+general|for\s+me),?\s+)?"
# a stance in idiom, the thing named first: "Cold weather isn't for me", "Jazz is my favourite genre",
# "Anything with cilantro is a no-go for me", "Spicy food and I don't get along" (common English idioms)
_IDIOM = re.compile(
    rf"^{_OPENER}{_THING_FIRST}(?:"
    r"(?P<like>is|are|'s|'re)\s+(?:(?:really|definitely|truly|just|always|still)\s+)?"
    r"(?:my\s+(?:all-time\s+)?(?:favou?rite|go-to|guilty\s+pleasure|thing|jam|passion)\b|"
    r"my\s+idea\s+of\s+(?:fun|a\s+good\s+time)\b|"
    r"(?:a\s+must(?:-have)?|non-negotiable)\s+for\s+me\b)|"
    r"(?:is\s+not|are\s+not|isn'?t|aren'?t|'s\s+not|'re\s+not)\s+(?:(?:really|exactly|quite|just|always|at\s+all)\s+)?"
    r"(?:my\s+(?:thing|kind\s+of\s+thing|cup\s+of\s+tea|scene|style|jam|idea\s+of\s+(?:fun|a\s+good\s+time))|"
    r"for\s+me)\b|"
    r"(?:is|are|'s|'re)\s+(?:(?:way|far|much|a\s+bit|a\s+little|just|always)\s+)?too\s+[\w-]+\s+for\s+me\b|"
    r"(?:is|are)\s+(?:(?:always|definitely|really)\s+)?(?:an?\s+)?(?:(?:no-go|no\s+go)\s+for\s+me|deal-?breaker|"
    r"red\s+flag|turn-?off)\b|"
    r"and\s+I\s+(?:don'?t|do\s+not|never)\s+(?:really\s+)?(?:get\s+along|mix|agree)\b)",
    re.IGNORECASE,
)
_NOTHING_BEATS = re.compile(
    rf"^{_OPENER}nothing\s+(?:beats|compares\s+to|tops)\s+(?P<obj>[^,;:!?]{{2,60}}?)(?:\s+for\s+me)?$", re.IGNORECASE
)
# the speaker as a kind of person: "I'm more of a tea person", "I'm not a city person", "I'm a night owl"
_PERSON = re.compile(
    r"\bI(?:'m|\s+am)\s+(?P<not>not\s+(?:really\s+|much\s+of\s+)?)?(?:(?:much|more|really|definitely|very|totally|"
    r"such|always|a\s+bit)\s+|of\s+)*an?\s+(?:(?:big|huge|total|real|complete|bit\s+of\s+a)\s+)?"
    r"(?P<obj>[\w-]+(?:\s+[\w-]+)?)\s+(?:person|type|kind\s+of\s+person|snob|buff|nerd|geek|junkie|addict|fanatic|lover|"
    r"enthusiast)\b|"
    r"\bI(?:'m|\s+am)\s+(?:(?:really|definitely|totally)\s+)?an?\s+(?P<kind>night\s+owl|early\s+(?:bird|riser)|homebody|"
    r"foodie|bookworm|introvert|extrovert|creature\s+of\s+habit)\b",
    re.IGNORECASE,
)
# "I'm someone who likes X" says "I like X": the relative clause's verb, in the first person
_SOMEONE_WHO = re.compile(
    r"\bI(?:'m|\s+am)\s+(?:someone|somebody|a\s+person|the\s+(?:kind|type|sort)\s+of\s+person)\s+who\s+"
    r"(?P<adv>\w+ly\s+)?(?P<verb>likes|loves|prefers|enjoys|hates|dislikes|avoids|values|needs|appreciates|"
    r"doesn't|does\s+not|can't|cannot|won't|never)\b",
    re.IGNORECASE,
)
_FIRST_PERSON = {"doesn't": "don't", "does not": "do not"}
_NEGATED = re.compile(r"n't\b|\b(?:not|never|no\s+longer)\b", re.IGNORECASE)
_NEG_ADJ_RE = re.compile(rf"^(?:{_NEG_ADJ})$", re.IGNORECASE)


def _evaluation(adjective: str | None, verb: str | None, ill: str | None) -> Polarity:
    """The polarity an evaluative adjective, an affecting verb or an ailment gives its object."""
    if ill:
        return "negative"
    if verb:
        positive = re.match(r"relax|calm|delight|excite|fascinat", verb, re.IGNORECASE)
        return "positive" if positive else "negative"
    return "negative" if adjective and _NEG_ADJ_RE.match(adjective) else "positive"


_NEED = re.compile(r"(?:need|require)\b", re.IGNORECASE)
_ADDRESSED = re.compile(r"\byou(?:rs?|rself)?\b", re.IGNORECASE)
_PLEASE = re.compile(r"^please\s+(?:don'?t|do\s+not|never|always|avoid|stop)\b", re.IGNORECASE)
_MY_FAVOURITE = re.compile(
    r"\bmy\s+(?:all-time\s+)?(?:favou?rite|go-to)\s+\w+(?:\s+\w+)?\s+(?:is|are)\b", re.IGNORECASE
)
# objects that make "I like ..." about this conversation, not about the person
_TRANSIENT = re.compile(
    r"^(?:your|it|its|this|that|these|those|them|him|her|the\s+(?:idea|way|answer|response|"
    r"first|second|third|last|one|above|following|suggestion|output|code)|to\s+(?:know|ask|see|"
    r"understand|thank|add|make|get|have)|when\s+you|how\s+you|if\s+you|you)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|\bdef\s+\w+\(|;\s*$|[{}]\s*$|^\s*(?:import|#include|class|public|return)\b", re.M)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CONTRACTION = {"i'm": "I am", "im": "I am", "i've": "I have"}


def _sentences(text: str) -> list[str]:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return [s.strip(" \t\"'“”*-•") for s in _SENTENCE.split(text) if s.strip()]


def _normalise(sentence: str) -> str:
    s = re.sub(r"\s+", " ", sentence).strip()
    s = s[0].upper() + s[1:] if s else s
    return s if s.endswith((".", "!", "?")) else s + "."


_NEG_CUE = re.compile(
    r"\b(?:not|never|no\s+longer|avoid\w*|dislike\w*|hate\w*|detest|despise|loathe|abhor|shun|resent|wary|"
    r"refuse\w*|"
    r"aversion|averse|opposed|distaste|disdain|can'?t|cannot|won'?t|don'?t|doesn'?t|stay\s+away|"
    r"steer\s+clear)\b",
    re.IGNORECASE,
)
_POS_CUE = re.compile(
    r"\b(?:love|like|enjoy|adore|prefer|fan|passionate|favou?rite|appreciate|relish|cherish|treasure|savou?r|"
    r"fond|drawn|partial|gravitate|rather)\b",
    re.IGNORECASE,
)


def polarity(sentence: str) -> Polarity:
    """``negative`` with any negation or rejection; ``positive`` for plain liking; else ``neutral``
    (constraints such as "I'm vegan" or "I only wear cotton", which never contradict by polarity)."""
    if _NEG_CUE.search(sentence):
        return "negative"
    return "positive" if _POS_CUE.search(sentence) else "neutral"


def _subject(sentence: str, end: int) -> str:
    rest = re.split(r"[,.;!?]|\b(?:because|since|as|due to|so|but)\b", sentence[end:], maxsplit=1)[0]
    return re.sub(r"\s+", " ", rest).strip()


def _before(sentence: str, start: int) -> str:
    """The grammatical subject before a verb at ``start`` ("The spicy dishes" of "..., but the spicy
    dishes don't appeal to me"): the words from the last clause boundary, less a leading conjunction."""
    head = re.split(r"[,;:]|\s[-\u2013\u2014]\s", sentence[:start])[-1]
    head = re.sub(r"^\s*(?:and|but|so|though|although|however|honestly|also|yet)\b", "", head, flags=re.I)
    return re.sub(r"\s+", " ", _STANCE_ADVERBS.sub("", head)).strip()


# stance and focusing adverbs that may stand between a subject and its verb (general English grammar)
_STANCE_ADVERBS = re.compile(
    r"(?:\s+(?:just|still|also|even|simply|really|truly|actually|honestly|usually|generally|typically|"
    r"particularly|especially|personally|definitely|certainly|totally|quite|never|rarely|often))+\s*$",
    re.IGNORECASE,
)


# an appositive: a comma, colon or dash, then words that do not open a clause of their own
_APPOSITIVE = re.compile(
    r"^\s*(?:,|:|\s[-\u2013\u2014])\s+(?!(?:and|but|or|so|as|because|since|which|who|that|though|although|"
    r"if|when|while|I|it|they|we|you|to)\b)(?P<app>[^,;:.!?]+)",
    re.IGNORECASE,
)


def _subject_of(read: str, m: re.Match[str]) -> str:
    """What a statement is about: the words before it ("X doesn't appeal to me") or after it; a reference
    that names nothing followed by an appositive ("I prefer option 1, the night train") is the appositive."""
    if m.group("neg2"):
        return _before(read, m.start())
    subject = _subject(read, m.end())
    if subject and objectless(subject):
        rest = read[m.end() :]
        app = _APPOSITIVE.match(rest[rest.find(subject) + len(subject) :]) if subject in rest else None
        if app is not None:
            return app.group("app").strip()
    return subject


def _named_statement(read: str, masked: Masked) -> tuple[re.Match[str], str] | None:
    """The first statement of a sentence whose object names something ("The other options don't appeal to
    me, as I prefer quiet places" is about quiet places), with its subject (:func:`_subject_of`); the first
    statement when none does."""
    first = None
    for m in _STATEMENT.finditer(read):
        subject = _subject_of(read, m)
        first = first or (m, subject)
        if not objectless(masked.restore(subject)):
            return m, subject
    return first


def _found_object(match: str) -> str:
    """The object of "I find <object> <adjective>" when a statement's match holds it ("" otherwise)."""
    found = re.search(r"\bfind\s+(.+)\s+\S+$", match, re.IGNORECASE)
    return found.group(1) if found else ""


# a clause explained after a dash or colon ("option 2 is best - start with the basics")
_EXPLAINED = re.compile(r"(?::|\s[-\u2013\u2014])\s+\w")


def _clause_subject(clause: str) -> str:
    """The words of a belief's clause before its verb ("that one" of "that one is best")."""
    return re.split(r"\b(?:is|are|was|were|would|will|seems?|sounds?|looks?|works?|'s)\b", clause, maxsplit=1)[0]


# words that refer without naming: English personal, demonstrative, relative and indefinite pronouns and
# the determiners, plus the generic nouns a reply uses for an item offered to it ("the other options",
# "that one", "those choices"); closed-class words of general English grammar, not from any data set
_REFERRING_TEXT = (
    "it its this that these those they them one ones other others another rest either neither both all any "
    "each none some such same former latter which what whichever whatever option options choice choices "
    "alternative alternatives suggestion suggestions idea ideas pick picks recommendation recommendations "
    "thing things stuff"
)
_REFERRING = frozenset(_REFERRING_TEXT.split())
# what may stand beside them without naming anything: articles, possessives, a few prepositions and
# degree words (general English function words)
_GLUE_TEXT = (
    "the a an my your our their of for to me us you really very quite just so too much more rather "
    "listed offered mentioned suggested given above here there rest remaining bit little pretty somewhat "
    "at all"
)
_GLUE = frozenset(_GLUE_TEXT.split())


def objectless(subject: str) -> bool:
    """True when ``subject`` refers to something without naming it ("the other options", "that one",
    "it"): a preference with such an object says nothing out of its conversation. A subject with no
    referring word at all ("of", from "..., which I'm not a fan of") is left to the caller."""
    words = re.findall(r"[a-z]+", subject.lower().replace("'s", ""))
    return any(w in _REFERRING for w in words) and all(w in _REFERRING or w in _GLUE for w in words)


def _as_first_person(m: re.Match[str]) -> str:
    verb = m.group("verb")
    verb = _FIRST_PERSON.get(verb.lower(), verb[:-1] if verb.lower().endswith("s") else verb)
    return f"I {m.group('adv') or ''}{verb}"


class RuleExtractor:
    """The offline default. ``max_words`` bounds a statement: longer sentences are pasted text."""

    def __init__(self, *, max_words: int = 60, choices: bool = True) -> None:
        self.max_words = max_words
        self.choices = choices

    def extract(self, turns: Sequence[Turn]) -> list[Extracted]:
        out: list[Extracted] = []
        for i, turn in enumerate(turns):
            if turn.get("role") != "user":
                continue
            masked = mask_quoted(turn.get("content") or "")
            out.extend(self._statements(masked, i))
            if self.choices and i > 0 and turns[i - 1].get("role") == "assistant":
                choice = _choice(turns[i - 1].get("content") or "", masked.shown, i)
                if choice is not None:
                    out.append(choice)
        return [e for e in out if is_storable(e.text)]

    def _statements(self, masked: Masked, turn: int) -> list[Extracted]:
        """Statements read from the user's own words; quotations are put back into what is kept."""
        if _CODE.search(masked.text):
            return []
        found: list[Extracted] = []
        for read in _sentences(masked.text):
            read = _SOMEONE_WHO.sub(_as_first_person, read)
            sentence = masked.restore(read)
            if len(sentence.split()) > self.max_words or sentence.endswith("?") or PLACEHOLDER in sentence:
                continue
            if _PLEASE.search(read):
                text = "I prefer that you " + sentence.split(None, 1)[1].rstrip(".!") + "."
                found.append(Extracted(text, "explicit", turn, "negative", masked.restore(_subject(read, 0))))
                continue
            fav = _MY_FAVOURITE.search(read)
            named = _named_statement(read, masked)
            m = named[0] if named else None
            if m is None and fav is None:
                other = self._other_families(read, sentence, masked, turn)
                if other is not None:
                    found.append(other)
                continue
            if m is not None and _NEED.match(m.group("pos") or "") and _ADDRESSED.search(read):
                continue  # "I need ... you ...": a request to the assistant, not a lasting need
            end = m.end() if m else fav.end()  # type: ignore[union-attr]
            before = m is not None and bool(m.group("neg2"))  # "X doesn't appeal to me": X comes first
            subject = named[1] if named else _subject(read, end)
            if objectless(masked.restore(subject)):
                continue  # "the other options don't appeal to me": no object out of context
            condition = m is not None and re.search(r"\bhave\b", m.group(0), re.IGNORECASE)
            if _TRANSIENT.match(_subject(read, end)) and not condition and not before:  # before any appositive
                continue
            if not subject and objectless(_found_object(masked.restore(m.group(0)) if m else "")):
                continue  # "I find them boring": the match holds the object, and it only refers
            if not subject:  # "I have a severe peanut allergy, so ...": the match names it
                subject = re.sub(r"^I\s*", "", (m or fav).group(0)).strip()  # type: ignore[union-attr]
            found.append(Extracted(_normalise(sentence), "explicit", turn, polarity(read), masked.restore(subject)))
        return found

    def _other_families(self, read: str, sentence: str, masked: Masked, turn: int) -> Extracted | None:
        """Beliefs about what is best, "I find X <adjective>", "X makes me <adjective>" / "X bores me"."""
        body = read.rstrip(".!")
        belief = _BELIEF.search(body)
        if belief:
            clause = belief.group("clause")
            if objectless(masked.restore(_clause_subject(clause))) and not _EXPLAINED.search(clause):
                return None
            return Extracted(_normalise(sentence), "explicit", turn, polarity(clause), masked.restore(clause.strip()))
        found = _FIND.search(body)
        if found and not objectless(masked.restore(found.group("obj"))):
            pol = _evaluation(found.group("adj"), None, None)
            return Extracted(_normalise(sentence), "explicit", turn, pol, masked.restore(found.group("obj").strip()))
        affects = _AFFECTS_ME.search(body)
        if affects and _NEGATED.search(affects.group("obj")):
            affects = None  # "X doesn't quite appeal to me": the verb is negated, not its object named
        if affects and not objectless(masked.restore(affects.group("obj"))):
            pol = _evaluation(
                affects.group("adj"), affects.group("verb"), affects.group("ill") or affects.group("negp")
            )
            pol = "positive" if affects.group("posp") else pol
            return Extracted(_normalise(sentence), "explicit", turn, pol, masked.restore(affects.group("obj").strip()))
        idiom = _IDIOM.search(body) or _NOTHING_BEATS.search(body)
        if idiom and not objectless(masked.restore(idiom.group("obj"))):
            liked = idiom.re is _NOTHING_BEATS or bool(idiom.group("like"))
            pol = "positive" if liked else "negative"
            return Extracted(_normalise(sentence), "explicit", turn, pol, masked.restore(idiom.group("obj").strip()))
        person = _PERSON.search(body)
        if person and not objectless(masked.restore(person.group("obj") or person.group("kind"))):
            pol = "negative" if person.group("not") else "neutral" if person.group("kind") else "positive"
            subject = masked.restore(person.group("obj") or person.group("kind")).strip()
            return Extracted(_normalise(sentence), "explicit", turn, pol, subject)
        return None


_OPTION = re.compile(r"(?:^|\s)(\d)[.)]\s+(.+?)(?=\s+\d[.)]\s+|$)", re.S)
# a pick named by its place: "option 2", "the first one", "the last option"
_ORDINAL_WORDS = r"option\s+(\d)|the\s+(first|second|third|fourth|last)\s+(?:one|option)"
_ORDINAL = re.compile(rf"\b(?:{_ORDINAL_WORDS})\b", re.I)
_PICK = re.compile(
    r"\b(?:sounds?\s+(?:like\s+(?:an?\s+)?)?(?:good|great|perfect|nice|better|ideal|right)|"
    r"I'?ll\s+(?:go|take|try|pick|choose)|"
    r"I\s+(?:choose|pick|prefer|like|want)|let'?s\s+(?:go|do|try)|other\s+options?\s+(?:don'?t|do\s+not|"
    r"won'?t)|works?\s+(?:best|for\s+me)|I'?d\s+(?:like|love|rather|prefer)|" + _ORDINAL_WORDS + r")\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z][a-z'-]+")
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "is",
        "are",
        "be",
        "it",
        "this",
        "that",
        "some",
        "many",
        "has",
        "have",
    ]
)


_PROSE_LEAD = re.compile(
    r"^.*?\b(?:could|can|might|may|options?\s+(?:are|include)|such\s+as|choose\s+(?:from|between))\s+", re.I
)


def _prose_options(text: str) -> list[str]:
    """Options written as one sentence: "You could A, B, C, or D." (the first such sentence)."""
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if sentence.count(",") < 2 or not re.search(r",\s+or\s+", sentence):
            continue
        body = _PROSE_LEAD.sub("", sentence.rstrip(".!?"), count=1)
        parts = [p.strip() for p in re.split(r",\s*(?:or\s+|and\s+)?", body) if p.strip()]
        if 2 <= len(parts) <= 6 and all(len(p.split()) >= 2 for p in parts):
            return parts
    return []


def _choice(options_text: str, reply: str, turn: int) -> Extracted | None:
    if "```" in options_text or len(reply.split()) > 40:
        return None
    options = [o.strip() for _, o in _OPTION.findall(options_text)] or _prose_options(options_text)
    if not 2 <= len(options) <= 6 or any(len(o.split()) > 40 for o in options) or not _PICK.search(reply):
        return None
    ordinal = _ORDINAL.search(reply)
    if ordinal:
        names = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": len(options)}
        idx = int(ordinal.group(1)) if ordinal.group(1) else names[ordinal.group(2).lower()]
        best = options[max(1, min(idx, len(options))) - 1]
    else:
        words = {w for w in _WORD.findall(reply.lower()) if w not in _STOP}
        scored = sorted(
            ((len(words & {w for w in _WORD.findall(o.lower()) if w not in _STOP}), o) for o in options),
            key=lambda x: -x[0],
        )
        (top, best), runner_up = scored[0], scored[1][0]
        # two shared words, or one that no other option has ("Tetris", "the documentary")
        if top < 2 and not (top == 1 and runner_up == 0):
            return None
    return Extracted(choice_text(best, [o for o in options if o != best]), "implicit", turn, "positive", best)


_CHOSE = "I chose this over the other options: "
_TURNED_DOWN = " I turned down: "
_STORED_CHOICE = re.compile(rf"^{re.escape(_CHOSE)}(?P<chosen>.+?)\.{re.escape(_TURNED_DOWN)}(?P<declined>.+)\.$", re.S)


def choice_text(chosen: str, declined: Sequence[str]) -> str:
    """The stored text of a choice: what was chosen and every option turned down, whole."""
    others = "; ".join(o.strip().rstrip(".") for o in declined)
    return f"{_CHOSE}{chosen.strip().rstrip('.')}.{_TURNED_DOWN}{others}."


def read_choice(text: str) -> tuple[str, list[str]] | None:
    """The chosen option and the declined ones of a text :func:`choice_text` made; None for any other text."""
    m = _STORED_CHOICE.match(text.strip())
    if m is None:
        return None
    return m.group("chosen"), [o.strip() for o in m.group("declined").split("; ") if o.strip()]
