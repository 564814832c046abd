"""Two sets of everyday statements, each written (from general usage, for this purpose, not from any
data set) before the extractor rules they were first run on, and 20 look-alikes with each.

They record the figures in docs/evaluations.md ("Everyday phrasings the extractor reads",
2026-12-03): the rules of that day keep 20 of set 3 and 11 of set 4 (16 and 9 before). Now that
they are in the tree they are development data: a claim about unseen phrasing needs a new set,
written after the rules it is run on. The statements' tests are floors (what was read stays read);
no look-alike may be kept.
"""

from __future__ import annotations

import pytest

from retrieval.extract import RuleExtractor

SET_3 = [
    "I'm really not into country music.",
    "Hiking trails with a view are my kind of weekend.",
    "I go out of my way to buy local produce.",
    "I've always loved the smell of old books.",
    "Board games bore me to death.",
    "I'm a sucker for anything with caramel.",
    "Reality shows are a waste of time for me.",
    "I'm wary of online dating apps.",
    "I've switched to oat milk and never looked back.",
    "I can never say no to a good curry.",
    "I'm much more comfortable in casual clothes.",
    "Fancy restaurants make me uneasy.",
    "I'm not the outdoorsy type.",
    "I'm happy with second-hand furniture.",
    "Museums are my happy place.",
    "Sugary cereals are off the menu for me.",
    "I like my steak well done.",
    "I keep my distance from energy drinks.",
    "I'm an avid birdwatcher.",
    "I'm a creature of habit when it comes to breakfast.",
    "Early flights are the worst.",
    "I'm partial to a glass of red on Fridays.",
    "I'd choose a mountain cabin over a beach resort.",
    "I get bored quickly with slow-paced films.",
    "Podcasts about history are right up my street.",
    "I'm terrified of spiders.",
    "I'm passionate about urban gardening.",
    "I hate queuing more than anything.",
    "Tea over coffee, always.",
    "I'm no fan of modern art.",
    "I gravitate towards earthy colours.",
    "I enjoy nothing more than a quiet evening in.",
    "Pineapple on pizza is a crime.",
    "I would never wear fur.",
    "Heavy metal isn't my style.",
    "I'm a regular at my local climbing gym.",
    "Cooking at home is my preference.",
    "I'm not comfortable with heights.",
    "I prefer paying in cash.",
    "Strong perfumes give me a headache.",
]
SET_3_LOOK_ALIKES = [
    "Can you help me plan a trip to Lisbon?",
    "I'm writing a report on renewable energy.",
    "I have a meeting at three, so keep it short.",
    "I think the second paragraph needs work.",
    "I'm not sure what you mean by that.",
    "I'd like a summary of this article, please.",
    "I need the answer in bullet points.",
    "I love this answer, thanks!",
    "That's not what I asked for.",
    "I'm going to the store later.",
    "I'm not a native speaker, so please correct my grammar.",
    "I tried your code and it crashed.",
    "I'll take a look at it tomorrow.",
    "I used to live in Berlin.",
    "My sister is coming to visit next week.",
    "I'm a teacher and I need a lesson plan.",
    "I'd rather you didn't use jargon in this email.",
    "I have two kids and a dog.",
    "Is this a good time to buy a laptop?",
    "I just got back from Japan.",
]
SET_4 = [
    "Winter is my favourite season by far.",
    "I'm really picky when it comes to coffee beans.",
    "I've never been one for crowded festivals.",
    "Audiobooks are a lifesaver on my commute.",
    "I can't live without my morning run.",
    "I'm trying to eat less processed food.",
    "I've gone off red meat lately.",
    "I'm loving minimalist design these days.",
    "Vintage shops are where I find my best clothes.",
    "I don't do horror.",
    "I'm more into documentaries than dramas.",
    "Mornings are when I'm most productive.",
    "Cats over dogs for me.",
    "I'm a sucker for a good plot twist.",
    "Noisy restaurants drive me crazy.",
    "I'm always drawn to handmade jewelry.",
    "I just can't get into jazz.",
    "Soft lighting puts me in a good mood.",
    "I'd happily eat sushi every day.",
    "I could never live in a big city.",
    "I'm intolerant to gluten.",
    "Sweets aren't really my weakness.",
    "Fast food is a guilty pleasure of mine.",
    "I absolutely can't stand loud chewing.",
    "I've started avoiding caffeine.",
    "I really appreciate brutally honest feedback.",
    "I'm no good with spicy food.",
    "Anything with mint makes me gag.",
    "I'm quite the fan of old westerns.",
    "I always pick the aisle seat.",
    "I'd rather stay home than go clubbing.",
    "My weekends revolve around football.",
    "Emails are better than phone calls for me.",
    "I'm keen to avoid long drives.",
    "I like keeping my workouts short.",
    "Horror films terrify me.",
    "Cheap furniture never lasts, so I buy quality.",
    "I steer towards neutral tones.",
    "I love learning by doing.",
    "Crowded trains make me anxious.",
]
SET_4_LOOK_ALIKES = [
    "Can you recommend a good book?",
    "I'm not sure which option is better.",
    "I think you forgot the last step.",
    "I'd like three more examples, please.",
    "I need this by Friday.",
    "My boss wants the report shortened.",
    "I'm preparing for an interview tomorrow.",
    "I liked your previous answer better.",
    "I'm confused about step two.",
    "Please make it shorter.",
    "I always forget how to do this in Excel.",
    "I'm visiting my parents this weekend.",
    "I'd appreciate a quick reply.",
    "It doesn't work for me, the button is grey.",
    "I'm going to try that now.",
    "I've already read that article.",
    "I'm not a lawyer, so explain it simply.",
    "I have a question about taxes.",
    "I hate to bother you again, but one more thing.",
    "I'll go with your suggestion.",
]
KEPT_ON_2026_12_03 = {"set 3": 20, "set 4": 11}


def kept(statement: str) -> bool:
    return bool(RuleExtractor().extract([{"role": "user", "content": statement}]))


@pytest.mark.parametrize(("name", "statements"), [("set 3", SET_3), ("set 4", SET_4)])
def test_the_statements_read_on_2026_12_03_are_still_read(name: str, statements: list[str]) -> None:
    assert sum(kept(s) for s in statements) >= KEPT_ON_2026_12_03[name]


@pytest.mark.parametrize("text", SET_3_LOOK_ALIKES + SET_4_LOOK_ALIKES)
def test_no_look_alike_is_kept(text: str) -> None:
    assert not kept(text)
