"""The embedded default task suite: fictional multi-domain QA, generated in code.

Why it exists: the main job (meta-train -> adapt -> evaluate) has to run on a
fresh machine with no dataset at hand, and tests need tasks that build in
milliseconds. Real datasets are loaded elsewhere (`metarag.data.loaders`).

What is generated, per domain:

- **Entities with coined names** (drugs, companies, contracts, towns, crop
  cultivars, appliances, exoplanets, alloys). Every name and every fact is
  drawn at random, so no fact can be known from pre-training: a model must
  retrieve the passage to answer.
- **One passage per entity**, titled with its name, that states all of the
  entity's facts in natural sentences plus filler sentences (maker, class,
  weight...) and a mention of another entity of the same domain. Within a
  domain every passage uses the same vocabulary and states several facts of
  the *same kind* (e.g. five doses), so both retrieval and answer extraction
  face distractors: only the entity name and the fact's wording tell them apart.
- **Questions** from several paraphrased templates per fact, worded unlike the
  passage sentence. Each question's gold passage is its entity's passage, and
  its answer string appears verbatim there (and exactly once).
- **An answer style per domain**: doses ("250 mg twice daily"), currency
  amounts ("€4.2 million"), clause numbers ("clause 14.3"), dates
  ("12 March 1847"), yields ("3.4 tonnes per hectare"), part numbers
  ("BP-4471-K"), astronomical quantities ("312.5 days"), temperatures
  ("1,240 °C"). Meta-learning has to cope with that shift, as with real domains.

Everything is deterministic: each domain draws from its own RNG seeded by
``(seed, domain)``, so a domain's task does not depend on which other domains
were requested, the same seed gives identical tasks, and another seed gives
other names and facts. Splits come from `make_splits` with the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from metarag.data.schema import Passage, QAExample, Task
from metarag.data.splits import make_splits

Rng = random.Random
Context = dict[str, str]

_MONTHS = ("January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December")


@dataclass(frozen=True)
class _Fact:
    """One askable fact: how to draw its value, state it, and ask about it."""

    key: str
    value: Callable[[Rng, Context], str]
    statement: str  # a sentence with {value}, {name} and any context slot
    questions: tuple[str, ...]  # paraphrased question templates


@dataclass(frozen=True)
class _Domain:
    name: str
    description: str  # goes into Task.domain
    entity: Callable[[Rng], str]  # coins one entity name
    context: Callable[[Rng], Context]  # per-entity slots shared by its sentences
    intro: str  # first sentence of every passage
    fillers: tuple[str, ...]  # sentences nobody asks about: distractor numbers and words
    facts: tuple[_Fact, ...]


def _coin(*parts: Sequence[str]) -> Callable[[Rng], str]:
    """A name generator that joins one random choice from each part."""
    return lambda rng: "".join(rng.choice(p) for p in parts)


def _pick(options: Sequence[str]) -> Callable[[Rng, Context], str]:
    return lambda rng, ctx: rng.choice(options)


def _number(lo: float, hi: float, decimals: int, unit: str) -> Callable[[Rng, Context], str]:
    """A uniform number formatted with thousands separators, e.g. '1,240 °C'."""

    def draw(rng: Rng, ctx: Context) -> str:
        x = round(rng.uniform(lo, hi), decimals)
        text = f"{x:,.{decimals}f}"
        return f"{text} {unit}"

    return draw


def _date(first_year: int, last_year: int) -> Callable[[Rng, Context], str]:
    # Day 1-28 keeps every date valid without a calendar.
    return lambda rng, ctx: (f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} "
                             f"{rng.randint(first_year, last_year)}")


def _dose(rng: Rng, ctx: Context) -> str:
    amount = rng.choice((5, 10, 20, 25, 40, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500,
                         750, 1000))
    frequency = rng.choice(("once daily", "twice daily", "three times daily", "every 8 hours",
                            "every 12 hours", "at bedtime", "once weekly"))
    return f"{amount} mg {frequency}"


_CURRENCIES = {"€": "euros", "$": "US dollars", "£": "pounds sterling"}


def _money(rng: Rng, ctx: Context) -> str:
    # One scale per company, so every amount in a passage looks alike.
    x = rng.uniform(1, 99) if ctx["scale"] == "million" else rng.uniform(1, 9)
    return f"{ctx['currency']}{x:.1f} {ctx['scale']}"


def _clause(rng: Rng, ctx: Context) -> str:
    return f"clause {rng.randint(2, 24)}.{rng.randint(1, 9)}"


def _part(prefix: str) -> Callable[[Rng, Context], str]:
    return lambda rng, ctx: f"{prefix}-{rng.randint(1000, 9999)}-{rng.choice('ABCDEFHJKLMNPRTVWX')}"


_SURNAMES = _coin(("Dun", "Kes", "Ald", "Brav", "Cor", "Fen", "Gal", "Hol", "Ives", "Lor", "Mab",
                   "Nor", "Pem", "Rus", "Sal", "Thorn", "Ver", "Wyn"),
                  ("more", "sel", "ridge", "by", "ton", "wick", "ham", "ley", "ford", "well"))

_FIRMS = _coin(("Har", "Cal", "Bren", "Dun", "Ash", "Mar", "Kel", "Wex", "Tor", "Lan", "Pell",
                "Rox", "Sted", "Vant", "Quor", "Fal", "Gren", "Ost"),
               ("brook", "loway", "more", "field", "ton", "wick", "vale", "stead", "mont", "ridge"))
_CULTIVARS = _coin(("Amber", "Gold", "Silver", "Red", "North", "Rain", "Stone", "Sun", "Wind",
                    "Frost", "Iron", "Copper", "Bright", "Mill", "Oak"),
                   ("moor", "crest", "field", "vale", "dale", "ridge", "glen", "mead", "hollow",
                    "brook"))
_BRANDS = _coin(("Nor", "Vex", "Lum", "Kai", "Ostra", "Pel", "Qua", "Zen", "Brio", "Tal"),
                ("vik", "ora", "ex", "on", "ix", "ano"))
_PLANETS = _coin(("Qor", "Tes", "Val", "Kep", "Ax", "Ber", "Cy", "Dra", "Ely", "Ix", "Ny", "Sar"),
                 ("vane", "saly", "ion", "ora", "ax", "ene"))
_ALLOYS = _coin(("Kes", "Vor", "Tal", "Bry", "Cel", "Dor", "Mer", "Ost", "Pyr", "Zel"),
                ("trite", "onite", "alium", "ex", "ane", "arite"))

_DOMAINS: tuple[_Domain, ...] = (
    _Domain(
        name="pharmacy",
        description="pharmacy: drug dosing",
        entity=_coin(("Vel", "Tor", "Cam", "Dex", "Lum", "Nor", "Pra", "Sel", "Tri", "Zan", "Ori",
                      "Bex", "Cor", "Fen", "Hal", "Mir", "Quin", "Rav", "Sul", "Xan"),
                     ("a", "i", "o", "e", "ava", "ora", "ime", "ela"),
                     ("zine", "dronate", "mab", "pril", "statin", "cillin", "vir", "olol", "tide",
                      "semide", "profen", "sartan", "oxin")),
        context=lambda rng: {
            "drug_class": rng.choice(("a beta-blocker", "an antiviral", "an antibiotic",
                                      "an ACE inhibitor", "a statin", "an anticoagulant",
                                      "an antihistamine", "a diuretic")),
            "form": rng.choice(("film-coated tablets", "capsules", "an oral suspension",
                                "dispersible tablets", "an oral solution")),
            "maker": _SURNAMES(rng) + " Laboratories",
        },
        intro="{name} is {drug_class} supplied as {form} by {maker}.",
        fillers=("Its effect on {other} has not been studied.",
                 "Tablets of {name} should be stored below 25 degrees and taken with water."),
        facts=(
            _Fact("adult_dose", _dose, "The standard adult dose of {name} is {value}.",
                  ("What is the standard adult dose of {name}?",
                   "How much {name} should an adult take?",
                   "What dose of {name} is recommended for adults?")),
            _Fact("child_dose", _dose, "Children under twelve are given {value}.",
                  ("What dose of {name} is given to children under twelve?",
                   "How is {name} dosed in young children?")),
            _Fact("renal_dose", _dose,
                  "In patients with kidney impairment the dose is lowered to {value}.",
                  ("What is the {name} dose for patients with kidney impairment?",
                   "How much {name} should a patient with poor kidney function take?")),
            _Fact("elderly_dose", _dose, "Patients over 65 should start {name} at {value}.",
                  ("At what dose should patients over 65 start {name}?",
                   "What starting dose of {name} suits elderly patients?")),
            _Fact("loading_dose", _dose, "Treatment opens with a loading dose of {value}.",
                  ("What loading dose is used when starting {name}?",
                   "How does treatment with {name} begin?")),
        ),
    ),
    _Domain(
        name="finance",
        description="corporate finance: annual reports",
        entity=lambda rng: _FIRMS(rng) + " " + rng.choice((
            "Industries", "Holdings", "Maritime Group", "Logistics", "Foods", "Energy", "Textiles",
            "Robotics", "Capital", "Mining")),
        context=lambda rng: {"currency": (c := rng.choice(sorted(_CURRENCIES))),
                             "currency_name": _CURRENCIES[c],
                             "scale": rng.choice(("million", "million", "billion")),
                             "year": str(rng.randint(2011, 2023)), "city": _SURNAMES(rng)},
        intro="{name} is headquartered in {city} and reports in {currency_name}.",
        fillers=("Its auditors flagged no material weakness for fiscal {year}.",
                 "Analysts often compare it with {other}."),
        facts=(
            _Fact("revenue", _money, "In fiscal {year}, {name} reported revenue of {value}.",
                  ("What revenue did {name} report for fiscal {year}?",
                   "How much did {name} earn in sales in {year}?",
                   "What was the {year} turnover of {name}?")),
            _Fact("net_profit", _money, "Net profit for the year came to {value}.",
                  ("What net profit did {name} make in fiscal {year}?",
                   "How large was the {year} net profit of {name}?")),
            _Fact("capex", _money, "Capital expenditure reached {value}.",
                  ("How much did {name} spend on capital expenditure in {year}?",
                   "What was the capital spending of {name} in fiscal {year}?")),
            _Fact("research", _money, "The company invested {value} in research and development.",
                  ("How much did {name} invest in research and development?",
                   "What was the R&D budget of {name} in {year}?")),
            _Fact("dividends", _money, "Shareholders received dividends totalling {value}.",
                  ("What dividends did {name} pay its shareholders in {year}?",
                   "How much did {name} return to shareholders as dividends?")),
        ),
    ),
    _Domain(
        name="legal",
        description="legal: commercial contracts",
        entity=lambda rng: (f"{_SURNAMES(rng)}-{_SURNAMES(rng)} "
                            + rng.choice(("supply", "licensing", "lease", "services",
                                          "distribution", "consultancy", "joint venture"))
                            + " agreement"),
        context=lambda rng: {"year": str(rng.randint(1995, 2023)),
                             "law": rng.choice(("Eldmark", "Sorvania", "New Calder", "Ostrelia"))},
        intro="The {name} was signed in {year} and is governed by the law of {law}.",
        fillers=("It replaces an earlier draft that referred to the {other}.",
                 "Notices under the {name} must be sent in writing."),
        facts=(
            _Fact("termination", _clause, "Termination rights are set out in {value}.",
                  ("Which clause of the {name} governs termination?",
                   "Where in the {name} are the termination rights?",
                   "Which clause lets a party end the {name}?")),
            _Fact("confidentiality", _clause, "The confidentiality obligations appear in {value}.",
                  ("Which clause of the {name} covers confidentiality?",
                   "Where does the {name} deal with confidential information?")),
            _Fact("indemnity", _clause, "Each party's indemnity is defined in {value}.",
                  ("Which clause of the {name} contains the indemnity?",
                   "Where are the indemnities of the {name} defined?")),
            _Fact("liability", _clause, "Liability is capped under {value}.",
                  ("Which clause of the {name} limits liability?",
                   "Where is the liability cap of the {name}?")),
            _Fact("force_majeure", _clause, "Force majeure events are handled by {value}.",
                  ("Which clause of the {name} deals with force majeure?",
                   "What part of the {name} applies to events beyond the parties' control?")),
        ),
    ),
    _Domain(
        name="history",
        description="history: towns and events",
        entity=_coin(("Varn", "Osk", "Castel", "Bel", "Dray", "Ell", "Frost", "Gar", "Hel", "Ister",
                      "Jor", "Kald", "Lind", "Mor", "Nest", "Piran", "Rud", "Sken", "Tam", "Wend"),
                     ("", "er", "an", "el", "is"),
                     ("holm", "ford", "mor", "haven", "wick", "burg", "stead", "mouth", "gate",
                      "bury", "dale", "crest")),
        context=lambda rng: {"river": _SURNAMES(rng),
                             "trade": rng.choice(("wool", "salt", "timber", "copper", "grain"))},
        intro="{name} is a town on the river {river} that grew rich on the {trade} trade.",
        fillers=("Its chroniclers often confused it with {other}.",
                 "The old {trade} market of {name} still stands."),
        # Disjoint year ranges keep the story in order and every date distinct.
        facts=(
            _Fact("founded", _date(1100, 1399), "{name} was founded on {value}.",
                  ("When was {name} founded?", "On what date was {name} founded?",
                   "What is the founding date of {name}?")),
            _Fact("charter", _date(1400, 1699), "It received its town charter on {value}.",
                  ("When did {name} receive its town charter?",
                   "On what date was {name} granted a charter?")),
            _Fact("fire", _date(1700, 1819), "A great fire destroyed much of the town on {value}.",
                  ("When did the great fire of {name} happen?",
                   "On what date did fire destroy much of {name}?")),
            _Fact("railway", _date(1820, 1899), "The railway reached {name} on {value}.",
                  ("When did the railway arrive in {name}?",
                   "On what date was {name} connected to the railway?")),
            _Fact("university", _date(1900, 1999), "Its university opened on {value}.",
                  ("When did the university of {name} open?",
                   "On what date was the university in {name} opened?")),
        ),
    ),
    _Domain(
        name="agriculture",
        description="agriculture: crop trials",
        entity=lambda rng: _CULTIVARS(rng) + " " + rng.choice((
            "wheat", "barley", "maize", "sorghum", "rice", "oats", "rye", "millet", "soybean",
            "lentil")),
        context=lambda rng: {"station": _SURNAMES(rng), "days": str(rng.randint(90, 160))},
        intro="{name} is a cultivar bred at the {station} research station that matures in "
              "{days} days.",
        fillers=("It was trialled beside {other} on the same plots.",
                 "Seed of {name} is sown at a depth of 3 to 5 centimetres."),
        facts=(
            _Fact("irrigated", _number(4, 12, 1, "tonnes per hectare"),
                  "Under irrigation it yields {value}.",
                  ("What yield does {name} give under irrigation?",
                   "How much does irrigated {name} produce per hectare?",
                   "What is the irrigated yield of {name}?")),
            _Fact("rainfed", _number(1.5, 6, 1, "tonnes per hectare"),
                  "Rain-fed fields of {name} return {value}.",
                  ("What is the rain-fed yield of {name}?",
                   "How much does {name} yield without irrigation?")),
            _Fact("drought", _number(0.5, 3, 1, "tonnes per hectare"),
                  "In drought years the harvest falls to {value}.",
                  ("How much does {name} yield in a drought year?",
                   "To what does the {name} harvest fall during drought?")),
            _Fact("organic", _number(2, 8, 1, "tonnes per hectare"),
                  "Organic trials of {name} averaged {value}.",
                  ("What yield did {name} average in organic trials?",
                   "How does {name} yield when grown organically?")),
            _Fact("record", _number(8, 16, 1, "tonnes per hectare"),
                  "The record harvest of {name} was {value}.",
                  ("What is the record yield of {name}?",
                   "What was the highest harvest ever measured for {name}?")),
        ),
    ),
    _Domain(
        name="electronics",
        description="consumer electronics: service manuals",
        entity=lambda rng: (_BRANDS(rng)
                            + f" {rng.choice('ABCDKLMRSTX')}{rng.choice('ABCDKLMRSTX')}"
                            + f"-{rng.randint(100, 999)} "
                            + rng.choice(("air purifier", "robot vacuum", "espresso machine",
                                          "wireless speaker", "dehumidifier", "smart thermostat",
                                          "cordless drill", "baby monitor"))),
        context=lambda rng: {"volts": rng.choice(("12", "24", "110", "230")),
                             "months": str(rng.choice((12, 18, 24, 36)))},
        intro="This section of the manual covers spare parts for the {name}.",
        fillers=("The {name} runs on {volts} V and carries a {months}-month warranty.",
                 "Parts from the {other} do not fit this model."),
        facts=(
            _Fact("battery", _part("BP"), "The replacement battery pack is part number {value}.",
                  ("What is the part number of the battery pack for the {name}?",
                   "Which battery should I order for the {name}?",
                   "What battery part does the {name} take?")),
            _Fact("adapter", _part("PA"), "Order power adapter {value} if the charger fails.",
                  ("What is the part number of the power adapter for the {name}?",
                   "Which charger fits the {name}?")),
            _Fact("board", _part("MB"), "The main control board is sold as {value}.",
                  ("What part number is the main control board of the {name}?",
                   "Which control board does the {name} use?")),
            _Fact("fan", _part("CF"), "A noisy cooling fan is replaced with part {value}.",
                  ("What is the part number of the cooling fan in the {name}?",
                   "Which fan replaces a noisy one in the {name}?")),
            _Fact("panel", _part("FP"), "The front panel assembly has part number {value}.",
                  ("What is the part number of the front panel of the {name}?",
                   "Which front panel assembly fits the {name}?")),
        ),
    ),
    _Domain(
        name="astronomy",
        description="astronomy: exoplanet catalogue",
        entity=lambda rng: (_PLANETS(rng)
                            + f"-{rng.randint(2, 99)}{rng.choice('bcdefg')}"),
        context=lambda rng: {"star_type": rng.choice(("red dwarf", "orange dwarf",
                                                      "yellow dwarf", "white dwarf", "subgiant")),
                             "survey": _SURNAMES(rng)},
        intro="{name} is an exoplanet orbiting a {star_type}, found by the {survey} survey.",
        fillers=("It lies in the same constellation as {other}.",
                 "Follow-up spectra of {name} show no sign of a second planet."),
        facts=(
            _Fact("period", _number(1, 900, 1, "days"), "It completes one orbit every {value}.",
                  ("What is the orbital period of {name}?",
                   "How long does {name} take to orbit its star?",
                   "How long is a year on {name}?")),
            _Fact("distance", _number(4, 3000, 1, "light-years"),
                  "Its star lies {value} from Earth.",
                  ("How far from Earth is {name}?", "What is the distance to {name}?")),
            _Fact("temperature", _number(150, 2500, 0, "kelvin"),
                  "Its equilibrium temperature is about {value}.",
                  ("What is the equilibrium temperature of {name}?",
                   "How hot is {name}?")),
            _Fact("mass", _number(0.2, 400, 1, "Earth masses"), "Its mass is estimated at {value}.",
                  ("What is the mass of {name}?", "How heavy is {name}?")),
            _Fact("axis", _number(0.01, 5, 2, "astronomical units"),
                  "Its orbit has a semi-major axis of {value}.",
                  ("What is the semi-major axis of the orbit of {name}?",
                   "How far is {name} from its star on average?")),
        ),
    ),
    _Domain(
        name="materials",
        description="materials engineering: alloy data sheets",
        entity=lambda rng: (_ALLOYS(rng)
                            + f"-{rng.randint(1, 99)} alloy"),
        context=lambda rng: {"base": rng.choice(("nickel", "titanium", "aluminium", "cobalt",
                                                 "copper", "iron")),
                             "density": f"{rng.uniform(2.5, 9.5):.2f}"},
        intro="{name} is a {base}-based alloy with a density of {density} grams per cubic "
              "centimetre.",
        fillers=("It is often specified in place of {other}.",
                 "The data sheet for {name} lists tensile tests at room temperature."),
        facts=(
            _Fact("melting", _number(900, 1800, 0, "°C"), "{name} melts at {value}.",
                  ("What is the melting point of {name}?", "At what temperature does {name} melt?",
                   "How hot must {name} get before it melts?")),
            _Fact("annealing", _number(400, 880, 0, "°C"), "It is annealed at {value}.",
                  ("At what temperature is {name} annealed?",
                   "What is the annealing temperature of {name}?")),
            _Fact("service", _number(150, 390, 0, "°C"),
                  "Its maximum service temperature is {value}.",
                  ("What is the highest temperature {name} can be used at?",
                   "What is the maximum service temperature of {name}?")),
            _Fact("brittle", _number(-120, -10, 0, "°C"), "Below {value} it becomes brittle.",
                  ("Below what temperature does {name} become brittle?",
                   "What is the brittle transition temperature of {name}?")),
            _Fact("forging", _number(0, 140, 0, "°C"),
                  "Cold forming should not be attempted below {value}.",
                  ("What is the lowest temperature for cold forming {name}?",
                   "Below what temperature should {name} not be cold formed?")),
        ),
    ),
)

_BY_NAME = {d.name: d for d in _DOMAINS}

SYNTHETIC_DOMAINS: tuple[str, ...] = tuple(d.name for d in _DOMAINS)
"""Names of the generated domains; tasks are called ``f"synthetic/{name}"``."""


def synthetic_suite(
    *,
    seed: int = 0,
    n_entities: int = 60,
    questions_per_entity: int = 3,
    domains: Sequence[str] | None = None,
) -> list[Task]:
    """Generate the fictional multi-domain task suite.

    Args:
        seed: Seeds names, facts, question wording and splits.
        n_entities: Entities (= passages) per domain.
        questions_per_entity: Questions asked about each entity, each about a
            different fact (at most 5).
        domains: Which of `SYNTHETIC_DOMAINS` to build, in this order; all by default.

    Returns:
        One validated `Task` per domain, named ``"synthetic/<domain>"``, with
        ``n_entities * questions_per_entity`` QA examples split by `make_splits`.

    Raises:
        ValueError: On an unknown or repeated domain, or counts out of range.
    """
    names = list(SYNTHETIC_DOMAINS if domains is None else domains)
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown synthetic domain(s) {unknown}; "
                         f"choose from {', '.join(SYNTHETIC_DOMAINS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"domains lists a domain twice: {names}")
    if n_entities < 1:
        raise ValueError(f"n_entities must be >= 1, got {n_entities}")
    max_q = min(len(d.facts) for d in _DOMAINS)
    if not 1 <= questions_per_entity <= max_q:
        raise ValueError(f"questions_per_entity must be in 1..{max_q} (one question per fact), "
                         f"got {questions_per_entity}")
    return [_build_task(_BY_NAME[n], seed, n_entities, questions_per_entity) for n in names]


def _build_task(domain: _Domain, seed: int, n_entities: int, n_questions: int) -> Task:
    # A string seed is hashed with SHA-512 by `random`, so it is stable across
    # runs and processes (unlike hash()), and each domain gets its own stream.
    rng = random.Random(f"metarag-synthetic:{seed}:{domain.name}")
    names = _unique_names(domain, rng, n_entities)
    corpus: list[Passage] = []
    examples: list[QAExample] = []
    for i, name in enumerate(names):
        ctx = {"name": name, **domain.context(rng)}
        # Another entity of the domain, mentioned as a distractor for retrieval.
        ctx["other"] = names[(i + 1 + rng.randrange(max(len(names) - 1, 1))) % len(names)]
        values = _distinct_values(domain, rng, ctx)
        body = [f.statement.format(value=values[f.key], **ctx) for f in domain.facts]
        body += [s.format(**ctx) for s in domain.fillers]
        rng.shuffle(body)
        pid = f"{domain.name}-p{i:04d}"
        text = " ".join([domain.intro.format(**ctx), *body])
        corpus.append(Passage(id=pid, text=text, title=name, source=f"synthetic/{domain.name}"))
        for fact in rng.sample(domain.facts, n_questions):
            examples.append(QAExample(
                id=f"{domain.name}-q{len(examples):05d}",
                question=rng.choice(fact.questions).format(**ctx),
                answers=(values[fact.key],),
                gold_passage_ids=(pid,),
                language="en",
                metadata={"entity": name, "fact": fact.key},
            ))
    train, dev, test = make_splits(examples, seed=seed)
    task = Task(name=f"synthetic/{domain.name}", domain=domain.description, language="en",
                corpus=corpus, train=train, dev=dev, test=test)
    return task.validate()


def _unique_names(domain: _Domain, rng: Rng, n: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for _ in range(50 * n + 100):
        name = domain.entity(rng)
        if name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
            if len(names) == n:
                return names
    raise ValueError(f"could not coin {n} distinct names for synthetic domain "
                     f"{domain.name!r} (got {len(names)}); use a smaller n_entities")


def _distinct_values(domain: _Domain, rng: Rng, ctx: Context) -> dict[str, str]:
    """Draw one value per fact, redrawing clashes so each answer occurs once in the passage."""
    values: dict[str, str] = {}
    for fact in domain.facts:
        value = fact.value(rng, ctx)
        while any(value in v or v in value for v in values.values()):
            value = fact.value(rng, ctx)
        values[fact.key] = value
    return values
