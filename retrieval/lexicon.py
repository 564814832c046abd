"""A general lexicon from the things people state preferences about to the situations they govern.

Each entry maps a trigger (a regular expression over a memory's text) to situations where that
preference matters: "a gluten intolerance" governs restaurants, bakeries, Italian food, recipes,
travel dining. Entries are general world knowledge across everyday domains (food and diet,
health, fitness, travel, lodging, transport, entertainment, shopping, home, technology, fashion,
beauty, pets, cars, learning, work), never phrased after any benchmark's items.
"""

from __future__ import annotations

import re
from functools import cache

# trigger words (regex alternatives) -> situations (short phrases)
_ENTRIES: tuple[tuple[str, str], ...] = (
    # food and diet
    (
        r"gluten|wheat|celiac|coeliac",
        "bread, pasta, pizza, pastries, bakeries, beer, Italian food, "
        "sandwiches, baked goods, restaurants, recipes, local cuisine while travelling",
    ),
    (
        r"dairy|lactose|milk|cheese",
        "cheese, milk, butter, cream, ice cream, pizza, French cuisine, desserts, "
        "coffee drinks, recipes, restaurants, breakfast",
    ),
    (
        r"vegan|plant-based|animal products?|animal-derived|by-products",
        "meat, dairy, eggs, honey, leather, "
        "wool, silk, gelatin, whey protein, restaurants, recipes, local cuisine, supplements, clothing, "
        "cosmetics, shoes, protein sources",
    ),
    (
        r"vegetarian|meat|pork|beef|halal|kosher",
        "meat dishes, barbecue, steakhouse, burgers, sausages, "
        "local cuisine, restaurants, recipes, protein sources, street food",
    ),
    (
        r"shellfish|seafood|fish|shrimp|crab|lobster|sushi",
        "seafood, sushi, coastal cuisine, fish market, "
        "Japanese food, Cajun and Creole food, paella, omega-3 foods, restaurants, local dishes",
    ),
    (
        r"peanut|nut\b|nuts\b|tree nut|almond",
        "Thai food, satay, Asian cuisine, desserts, pastries, granola, "
        "snacks, trail mix, pesto, restaurants, recipes",
    ),
    (r"\begg", "breakfast, baking, omelettes, brunch, desserts, recipes"),
    (r"soy|tofu", "Asian cuisine, tofu, soy sauce, Japanese and Chinese food"),
    (
        r"spicy|spice|chili|hot food",
        "Indian food, Thai food, Mexican food, Sichuan cuisine, curries, hot sauce, local dishes",
    ),
    (r"sweet|sugar|dessert", "desserts, breakfast, pastries, candy, soft drinks, snacks, baking"),
    (
        r"alcohol|drinking|wine|beer|sober",
        "bars, pubs, nightlife, wine tasting, brewery tours, cocktails, parties, dinners, celebrations",
    ),
    (r"caffeine|coffee", "coffee shops, cafes, energy drinks, tea, morning routine"),
    (r"street food|food trucks?|hygiene", "street food, night markets, food stalls, local food tours"),
    (r"raw|undercooked", "sushi, sashimi, tartare, oysters, rare steak"),
    (
        r"fast food|chain restaurants?|processed",
        "fast food, chain restaurants, convenience meals, road trips, quick lunch",
    ),
    (
        r"keto|low-carb|carbs|paleo|diet",
        "meal plans, restaurants, recipes, snacks, breakfast, protein, weight loss",
    ),
    (
        r"organic|local(?:ly)? (?:sourced|grown)|farm",
        "groceries, farmers markets, restaurants, produce, meal planning",
    ),
    (r"fine dining|formal|dress code", "upscale restaurants, fancy dinners, dress codes, date night"),
    (
        r"crowd|busy|touristy|tourist traps?|noisy|loud",
        "popular attractions, theme parks, festivals, "
        "concerts, city centre, peak season, nightlife, crowded restaurants, sightseeing",
    ),
    # health and body
    (r"allerg", "food, restaurants, materials, pets, cosmetics, outdoor activities, hotels"),
    (
        r"medication|medicine|pharmaceutical|natural remed|holistic",
        "headaches, pain relief, sleep, colds, anxiety, stress, supplements, treatments",
    ),
    (
        r"joint|knee|back pain|injur|arthritis|high-impact|jumping",
        "running, jumping, aerobics, HIIT, group exercise classes, sports, hiking, dancing, workouts",
    ),
    (
        r"smell|scent|fragrance|perfume|lavender|odor",
        "essential oils, candles, perfume, air fresheners, cosmetics, spa, cleaning products, relaxation",
    ),
    (
        r"sleep|insomnia|night owl|early (?:riser|morning)",
        "schedules, morning routine, hotels, travel, workouts, study time",
    ),
    (r"supplement|protein powder|whey", "muscle building, nutrition, sports nutrition, protein intake"),
    # fitness and sport
    (
        r"swim|pool|water|ocean|sea\b|beach|boat|kayak|surf|div(?:e|ing)|snorkel|cruise",
        "beach, ocean, lakes, boat tours, cruises, islands, snorkeling, surfing, water sports, "
        "swimming, pool, endurance training, cardio, coastal trips, water parks",
    ),
    (
        r"heights?|elevation|altitude|climb|skydiv|bungee|zip ?line",
        "mountains, climbing, hiking trails, "
        "skydiving, bungee jumping, ziplining, towers, rooftops, cable cars, hot air balloons, cliffs, "
        "outdoor adventures, observation decks",
    ),
    (
        r"\brun(?:s|ning)?\b|jog|marathon",
        "cardio, endurance, running, races, track, fitness routine, marathons, sports",
    ),
    (
        r"hik(?:e|ing)|trek|camp(?:ing)?|outdoors?|nature",
        "hiking, camping, trails, national parks, "
        "mountains, forests, exploring nature, outdoor adventures, staying active",
    ),
    (r"gym|weights|lifting|strength", "workouts, strength training, muscle building, fitness routine"),
    (r"yoga|meditation|pilates|stretch", "relaxation, flexibility, stress relief, workouts, wellness"),
    (
        r"team sports?|football|soccer|basketball|baseball|hockey|mainstream sports?",
        "sports events, games to watch, stadiums, sports bars, team sports, weekend plans",
    ),
    (
        r"motor|racing|formula|nascar|cars? rac",
        "motor racing, Formula 1, Grand Prix, racing events, car shows",
    ),
    (
        r"competitive|competition|contact sports?|violent sports?|combat|boxing|martial",
        "competitive sports, tournaments, combat sports, boxing, martial arts, team games, leagues",
    ),
    (
        r"winter|cold|snow|ski",
        "skiing, snowboarding, winter trips, mountains, cold destinations, winter sports",
    ),
    (
        r"heat|hot weather|sun\b|sunny|humid",
        "summer travel, tropical destinations, beaches, desert, outdoor activities, midday sun",
    ),
    (
        r"fitness gadgets?|wearables?|trackers?|apps?\b|smartwatch",
        "tracking progress, fitness apps, smartwatches, step counting, workout planning, technology, devices",
    ),
    (
        r"group|classes|social|people|strangers|alone|solo|introvert",
        "group classes, team activities, tours, parties, workshops, solo travel, study groups, meetups",
    ),
    # travel and transport
    (
        r"fly|flying|flights?|plane|airline|air travel",
        "flights, long-distance travel, international "
        "trips, airports, vacations abroad, getting to a destination",
    ),
    (
        r"ride-?shar|uber|lyft|taxi",
        "airport transfers, getting around the city, transportation options, late night rides, commuting",
    ),
    (
        r"public transport|bus|subway|metro|trains?",
        "getting around the city, commuting, airport transfers, transportation options, city trips",
    ),
    (
        r"rental cars?|driving|drive|car\b|cars\b|vehicle|electric|hybrid|gas|fuel",
        "rental cars, road trips, car models, commuting, transportation, buying a car",
    ),
    (r"bik(?:e|ing)|cycl", "cycling, getting around the city, commuting, bike tours"),
    (
        r"motion sickness|seasick|nausea",
        "boats, cruises, long drives, flights, roller coasters, winding roads, ferries",
    ),
    (
        r"hotel|hostel|airbnb|accommodation|lodging|resort|third-party booking|booking sites?",
        "hotels, accommodation, booking, where to stay, vacation rentals, reservations",
    ),
    (
        r"animal (?:performances?|exhibits?|rides?|exploitation)|zoos?|aquariums?|circus|captivity|"
        r"mistreat|exploit|cruelty",
        "zoos, aquariums, marine parks, circuses, elephant rides, horse "
        "carriages, theme parks, wildlife attractions, family vacation attractions",
    ),
    (
        r"theme parks?|roller ?coasters?|thrill",
        "theme parks, amusement parks, roller coasters, family attractions",
    ),
    (
        r"museums?|history|historical|art galler",
        "museums, historical sites, galleries, cultural tours, sightseeing, city tours",
    ),
    (r"nightlife|clubs?\b|bars?\b|party", "nightlife, clubs, bars, parties, evening entertainment"),
    (r"shopping|malls?", "shopping, markets, malls, souvenirs"),
    (
        r"budget|expensive|luxury|cheap|afford|cost|price",
        "prices, budget options, luxury options, hotels, restaurants, products, travel costs",
    ),
    (
        r"eco|environment|sustainab|carbon|green|ethical",
        "sustainable products, eco-friendly travel, transportation, clothing, materials, brands, energy use",
    ),
    # entertainment
    (
        r"horror|scary|gore|violen|graphic",
        "horror films, thrillers, crime dramas, war movies, violent video games, action movies",
    ),
    (r"zombie|apocalyp|dystopi", "zombie shows, post-apocalyptic series, survival games, thrillers"),
    (r"romance|romantic|love stories", "romantic comedies, dramas, novels, date movies"),
    (r"comedy|sitcom|humou?r", "comedies, sitcoms, stand-up, funny movies"),
    (r"animat|cartoon|anime", "animated films, cartoons, anime, family movies, kids shows"),
    (r"period dramas?|historical films?|costume", "period dramas, historical films, costume dramas"),
    (r"documentar|reality (?:tv|shows?)", "documentaries, reality TV, factual shows, streaming"),
    (r"subtitle|foreign|dubbed", "foreign films, international shows, subtitles, world cinema"),
    (
        r"long (?:movies?|films?)|hours? long|lengthy|binge|short",
        "movie length, series length, short episodes, weekend movies, binge-watching",
    ),
    (
        r"cgi|special effects|visual effects|blockbuster",
        "blockbusters, action movies, superhero films, visually impressive movies",
    ),
    (r"superhero|marvel|dc\b", "superhero films, comic book movies, blockbusters"),
    (
        r"sci-?fi|science fiction|fantasy|medieval|magic|dragons?",
        "fantasy, science fiction, RPGs, tabletop games, novels, movies, series, video games",
    ),
    (
        r"mobile games?|phone games?|microtransaction|pay-to-win|free-to-play|in-app",
        "phone games, casual games, mobile apps, free games, gaming during breaks",
    ),
    (
        r"multiplayer|online gaming|pvp|co-?op|single-player",
        "online games, multiplayer, co-op games, competitive games, game nights",
    ),
    (r"pixel|retro|graphics", "indie games, retro games, visual style, video games"),
    (
        r"card games?|deck-building|board games?|tabletop|puzzle|strategy|turn-based|shooters?|fps|rpg",
        "game nights, tabletop games, board games, video games, strategy games, party games",
    ),
    (
        r"music|songs?|country|jazz|rap|hip-hop|rock|metal|classical|opera|pop\b|edm|concert",
        "concerts, music festivals, playlists, live music, venues, nightlife, road trips, workouts",
    ),
    (
        r"books?|novels?|reading|fiction|non-fiction|audiobooks?|e-?books?|kindle",
        "books, novels, reading lists, book clubs, audiobooks, e-readers, libraries, gifts",
    ),
    (
        r"podcasts?|videos?|youtube|lectures?",
        "podcasts, videos, online courses, lectures, learning resources",
    ),
    (r"spoilers?", "reviews, recommendations, trailers, plot summaries"),
    # shopping, home, fashion, beauty
    (
        r"leather|wool|silk|fur|down\b|feathers?|animal-based|cashmere",
        "jackets, coats, shoes, bags, "
        "belts, sweaters, rugs, bedding, furniture, upholstery, accessories, fall and winter clothing",
    ),
    (
        r"synthetic|polyester|nylon|acrylic|natural fibers?|cotton|linen|bamboo|fabrics?",
        "clothing, summer outfits, bedding, towels, sportswear, fabrics, wardrobe",
    ),
    (
        r"patterns?|floral|prints?|stripes|colou?rs?|neon|bright|monochrom|minimalis|loud",
        "outfits, dresses, wardrobe, decor, paint, furniture, accessories, style",
    ),
    (r"heels|sneakers|shoes|boots", "shoes, footwear, outfits, formal events"),
    (r"fast fashion|brands?|designer|logos?|labels?", "clothing stores, shopping, brands, wardrobe, gifts"),
    (r"jewel|gold|silver|accessor", "jewelry, accessories, gifts, outfits"),
    (
        r"makeup|cosmetic|skincare|skin|fragrance-free|paraben|sulfate|chemicals|hair",
        "skincare routine, makeup, beauty products, hair care, cosmetics, toiletries",
    ),
    (r"tattoo|piercing", "tattoos, piercings, body art"),
    (
        r"wicker|rattan|plastic|metal|stainless|wood|glass|marble|granite|concrete|velvet",
        "furniture, patio, sunroom, kitchen appliances, countertops, decor, materials, renovation",
    ),
    (r"wallpaper|paint|walls?", "walls, wall decor, texture, bedroom, living room, renovation"),
    (r"carpet|rugs?", "rugs, carpets, floors, living room, bedroom"),
    (r"clutter|minimal|decor|knick", "decor, home design, living room, shelves, decorating"),
    (r"plants?|gardening|flowers?|pollen", "houseplants, garden, flowers, decor, outdoor spaces, allergies"),
    (r"candles?|fire|flames?", "candles, fireplaces, ambience, relaxation, decor"),
    (
        r"smart home|voice assistants?|alexa|siri|always-on|microphones?|cameras?",
        "smart home, voice assistants, speakers, security systems, devices, privacy",
    ),
    (
        r"subscription|one-time|own my software|recurring",
        "software, apps, streaming services, "
        "video editing, office suites, antivirus, cloud storage, music services",
    ),
    (
        r"open-source|proprietary|ecosystems?|apple|android|windows|linux|mac\b",
        "smartphones, laptops, smart home, software, tablets, operating systems, devices",
    ),
    (
        r"touchscreens?|physical (?:keyboards?|buttons?)|keyboards?|buttons",
        "phones, laptops, tablets, cars, devices, mobile device upgrade",
    ),
    (
        r"privacy|tracking|data collection|surveillance|biometric|fingerprint|facial recognition",
        "smartphones, apps, smart home, social media, security, browsers, devices, ride-sharing, "
        "booking sites",
    ),
    (r"wireless|bluetooth|batter|charging|cables?", "headphones, speakers, devices, chargers, peripherals"),
    (
        r"big (?:brands?|corporations?|tech)|small(?:er)? (?:brands?|businesses)|independent|local shops?",
        "products, shopping, brands, stores, restaurants, electronics",
    ),
    (
        r"refurbished|second-?hand|used|vintage|thrift",
        "buying products, shopping, electronics, clothing, furniture",
    ),
    (
        r"screen|screen time|digital|online|virtual|remote|computers?|technology|tech\b|gadgets?",
        "online courses, apps, digital tools, virtual events, e-learning, devices, screen time, "
        "remote work, technology",
    ),
    # pets
    (
        r"dogs?|cats?|pets?|fur|dander|birds?|reptiles?|snakes?|spiders?|insects?|bugs?|rodents?",
        "pets, animals, pet-friendly hotels, zoos, outdoor spaces, parks, home, furniture, travel",
    ),
    # learning and work
    (
        r"textbooks?|lectures?|flashcards?|memoriz|rote|studying|study|exam",
        "studying, exams, learning resources, courses, textbooks, memorising facts",
    ),
    (
        r"hands-on|interactive|gamif|project-based|practical|experiential|visual learn|diagrams?|"
        r"auditory|storytelling|narrative",
        "learning methods, courses, study techniques, resources, tutorials, workshops, language learning",
    ),
    (
        r"in-person|classroom|face-to-face|self-paced|self-directed|structured|deadlines?|schedule",
        "courses, classes, training, learning programs, workshops, work schedule",
    ),
    (
        r"office|open-plan|work from home|remote work|commut|meetings?|cowork|teams?\b|colleagues",
        "workplace, office setup, remote work, meetings, career, job choice, productivity",
    ),
    (
        r"public speaking|presentations?|spotlight|shy|attention",
        "presentations, meetings, parties, group activities, performances, events",
    ),
    (
        r"religio|spiritual|church|faith|christian|muslim|jewish|hindu|buddhis",
        "holidays, food, travel, gifts, events, schedules",
    ),
    (
        r"kids?|children|family|toddler|baby",
        "family activities, kid-friendly places, family vacations, hotels, restaurants",
    ),
)


@cache
def _compiled() -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple(
        (re.compile(rf"\b(?:{trigger})", re.IGNORECASE), situations) for trigger, situations in _ENTRIES
    )


def situations(text: str, limit: int = 6) -> list[str]:
    """The situation lists of the lexicon entries that ``text`` triggers, in lexicon order."""
    out: list[str] = []
    for pattern, sits in _compiled():
        if pattern.search(text):
            out.append(sits)
            if len(out) >= limit:
                break
    return out
