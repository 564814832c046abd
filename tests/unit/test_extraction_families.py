"""The rule extractor on families of ordinary English self-statements (written for this test from
general usage, not from any data set), and on look-alikes that are not preferences."""

from __future__ import annotations

import pytest

from retrieval.extract import RuleExtractor

FAMILIES = {
    "intensity adverbs": [
        "I thoroughly enjoy slow-cooked stews.",
        "I genuinely appreciate handwritten letters.",
        "I deeply dislike open-plan offices.",
        "I really, really love rainy afternoons.",
        "I sincerely hate loud ringtones.",
    ],
    "belief": [
        "I believe public transport beats driving in big cities.",
        "I feel strongly that kids should play outside.",
        "I think minimalist furniture looks best.",
        "I'm convinced that cold showers are good for me.",
        "I firmly believe in buying second-hand.",
    ],
    "need": [
        "I need a quiet room to concentrate.",
        "I require step-free access everywhere I go.",
        "I need to stay away from caffeine after noon.",
        "I rely on public transport to get around.",
    ],
    "dislike and aversion": [
        "I abhor reality television.",
        "I can't bear the taste of coriander.",
        "I shy away from horror films.",
        "I'm wary of buying used electronics.",
        "I'm put off by overly sweet desserts.",
        "Loud bars make me anxious.",
        "Heavy metal music gives me a headache.",
        "Long car journeys bore me.",
    ],
    "I find X ...": [
        "I find long meetings exhausting.",
        "I find gardening relaxing.",
        "I find spreadsheets oddly satisfying.",
    ],
    "negated likes": [
        "I don't care for musicals.",
        "I've never liked camping.",
        "I'm not big on fancy restaurants.",
        "I wouldn't enjoy a cruise.",
        "I'm not really into team sports.",
    ],
    "leaning": [
        "I'd rather take the train than fly.",
        "I tend to gravitate toward earthy tones.",
        "I'm drawn to modern architecture.",
        "I'm partial to dark chocolate.",
        "I'm a huge fan of board games.",
    ],
}
CASES = [(family, s) for family, statements in FAMILIES.items() for s in statements]


@pytest.mark.parametrize(("family", "statement"), CASES)
def test_a_self_statement_of_preference_is_kept(family: str, statement: str) -> None:
    found = RuleExtractor().extract([{"role": "user", "content": statement}])
    assert len(found) == 1, family
    assert found[0].text.rstrip(".") == statement.rstrip(".") and found[0].subject


@pytest.mark.parametrize(
    ("statement", "polarity"),
    [
        ("I find gardening relaxing.", "positive"),
        ("I find long meetings exhausting.", "negative"),
        ("Loud bars make me anxious.", "negative"),
        ("Heavy metal music gives me a headache.", "negative"),
        ("I'm not big on fancy restaurants.", "negative"),
        ("I've never liked camping.", "negative"),
        ("I genuinely appreciate handwritten letters.", "positive"),
    ],
)
def test_the_families_get_the_polarity_they_state(statement: str, polarity: str) -> None:
    (found,) = RuleExtractor().extract([{"role": "user", "content": statement}])
    assert found.polarity == polarity


@pytest.mark.parametrize(
    "text",
    [
        "I need help with my essay.",
        "I think the answer is 42.",
        "I believe you made a mistake.",
        "I find it hard to understand your answer.",
        "I need to book a flight to Paris next week.",
        "I feel like the second option is wrong.",
        "I'd rather you explain it again.",
        "Your last answer makes me anxious.",
        "This bores me.",
        "I need a summary of this article.",
        "I need a short poem in which you describe the sea.",
        "I require a cover letter that you tailor to this job.",
    ],
)
def test_requests_facts_and_remarks_about_the_conversation_are_not_kept(text: str) -> None:
    assert RuleExtractor().extract([{"role": "user", "content": text}]) == []


@pytest.mark.parametrize(
    "text",
    [
        'My friend wrote: "I hate camping and I love hotels."',
        "> I find long meetings exhausting.\nCan you summarise this forum post?",
    ],
)
def test_quoted_material_is_not_the_users_preference(text: str) -> None:
    assert RuleExtractor().extract([{"role": "user", "content": text}]) == []
