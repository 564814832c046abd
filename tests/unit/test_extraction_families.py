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
        "I need a wheelchair-accessible hotel.",
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
        "I'd pick a quiet cabin over a busy resort any day.",
        "I usually go for window seats.",
        "I'm more of a tea person than a coffee person.",
    ],
    "idioms, the thing named first": [
        "Cold weather isn't for me.",
        "Loud bars aren't really my scene.",
        "Musicals are not my cup of tea.",
        "Bright colors aren't my thing.",
        "Jazz is my favorite genre.",
        "Fantasy novels are my guilty pleasure.",
        "Anything with cilantro is a no-go for me.",
        "Spicy food and I don't get along.",
        "Nothing beats a good mystery novel for me.",
        "Dairy doesn't agree with me.",
        "Electric cars appeal to me.",
    ],
    "phrasal verbs of effect": [
        "Crowds stress me out.",
        "Lectures put me to sleep.",
        "Small talk drains me.",
        "Horror movies give me nightmares.",
    ],
    "attachment and aversion": [
        "I'm really into minimalist Scandinavian furniture.",
        "I'm obsessed with Korean dramas.",
        "I'm a sucker for romantic comedies.",
        "I have a soft spot for old Hollywood films.",
        "I'm a big believer in public transport.",
        "I'm picky about coffee.",
        "I dread public speaking.",
        "I've grown tired of superhero movies.",
        "I'd never set foot on a cruise ship.",
        "I'm not much of a reader.",
        "I'm terrible with heights.",
    ],
    "habits, diets and efforts": [
        "I usually skip breakfast.",
        "I mostly shop online.",
        "I'm gluten-free.",
        "I'm trying to cut back on sugar.",
        "I get motion sickness on boats.",
        "I'm a night owl.",
        "I'd love to try more Ethiopian food.",
        "I've been vegetarian for ten years.",
        "I hardly ever eat out.",
        "I tend not to watch anything with subtitles.",
        "I steer away from anything with artificial sweeteners.",
        "I'm always up for a board game night.",
        "I always travel light.",
        "I hate to fly.",
    ],
    "second round": [
        "I'm fond of antique furniture.",
        "I'd much prefer a small wedding.",
        "I'd sooner walk than take the bus.",
        "I'll take a paperback over an e-reader every time.",
        "I'm big on sustainability when I shop.",
        "I can't get enough of true crime podcasts.",
        "I'm definitely more of a beach person.",
        "I'm a huge coffee snob.",
        "Camping is not really my idea of fun.",
        "Theme parks are too hectic for me.",
        "Pop music gets on my nerves.",
        "Rap music grates on me.",
        "Sci-fi has never really clicked with me.",
        "Thrillers keep me hooked.",
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
        ("Cold weather isn't for me.", "negative"),
        ("Anything with cilantro is a no-go for me.", "negative"),
        ("Spicy food and I don't get along.", "negative"),
        ("Jazz is my favorite genre.", "positive"),
        ("Nothing beats a good mystery novel for me.", "positive"),
        ("Electric cars appeal to me.", "positive"),
        ("Crowds stress me out.", "negative"),
        ("Horror movies give me nightmares.", "negative"),
        ("I'm more of a tea person than a coffee person.", "positive"),
        ("I'm not much of a reader.", "negative"),
        ("I'm not a city person.", "negative"),
        ("Theme parks are too hectic for me.", "negative"),
        ("Pop music gets on my nerves.", "negative"),
        ("Sci-fi has never really clicked with me.", "negative"),
        ("Thrillers keep me hooked.", "positive"),
        ("I'm a huge coffee snob.", "positive"),
    ],
)
def test_the_families_get_the_polarity_they_state(statement: str, polarity: str) -> None:
    (found,) = RuleExtractor().extract([{"role": "user", "content": statement}])
    assert found.polarity == polarity


@pytest.mark.parametrize(
    ("statement", "subject"),
    [
        ("Cold weather isn't for me.", "Cold weather"),
        ("Honestly, sweet wines are not for me.", "sweet wines"),
        ("Spicy food and I don't get along.", "Spicy food"),
        ("Nothing beats a good mystery novel for me.", "a good mystery novel"),
        ("I'm more of a tea person than a coffee person.", "tea"),
        ("Small talk drains me.", "Small talk"),
    ],
)
def test_an_idiom_is_about_the_thing_it_names(statement: str, subject: str) -> None:
    (found,) = RuleExtractor().extract([{"role": "user", "content": statement}])
    assert found.subject == subject


def test_someone_who_likes_is_kept_in_the_first_person() -> None:
    (found,) = RuleExtractor().extract([{"role": "user", "content": "I'm someone who really likes a clear plan."}])
    assert (found.text, found.polarity, found.subject) == ("I really like a clear plan.", "positive", "a clear plan")
    (found,) = RuleExtractor().extract(
        [{"role": "user", "content": "I'm the kind of person who doesn't enjoy surprises."}]
    )
    assert (found.text, found.polarity) == ("I don't enjoy surprises.", "negative")


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
        "I'd never heard of that band before.",
        "I'd never thought about it that way.",
        "I would never have guessed that.",
        "This isn't for me, it's for my sister.",
        "That answer isn't really my style.",
        "The package is for me.",
        "The meeting is a must.",
        "I'm looking for a hotel in Rome.",
        "I look forward to your reply.",
        "I go for a run every morning.",
        "I'd love to get your feedback on this essay.",
        "I'd love to learn more about how this works.",
        "I want to avoid any mistakes in this letter.",
        "Those suggestions don't quite appeal to me.",
        "Crowds never stress me out.",
        "I'm up for a challenge today.",
        "I need a packing list for Iceland.",
        "I'm a teacher and I need a lesson plan.",
        "I need a new recipe for dinner.",
        "I always forget how to do this in Excel.",
        "I always get confused by tax forms.",
        "I hate to bother you again, but one more thing.",
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
