#!/usr/bin/env python3
"""Regenerate given_names.txt, surnames.txt, name_stoplist.txt, name_particles.txt
and SOURCES.md.

Source: the locale person providers of the Faker package (MIT licence), read
as Python attributes (first_names, last_names, ...), never copied by hand.

    python3 -m venv /tmp/pii-venv && /tmp/pii-venv/bin/pip install Faker==40.63.0
    /tmp/pii-venv/bin/python3 make_names.py          # or: python3 make_names.py
                                                      #     with Faker importable

Rules (see SOURCES.md):
  * lower case, NFC; only Latin-script entries (the ASCII folding must succeed);
  * letters only, plus internal hyphen or apostrophe; length >= 2;
    entries with spaces or dots ("de la Cruz", "'s Gravensande") are dropped;
  * an ASCII-folded variant is added beside every accented entry
    ("josé" + "jose", "yılmaz" + "yilmaz", "łukasz" + "lukasz"); German-locale
    entries with umlauts also get the ae/oe/ue spelling ("müller" + "mueller");
    entries with an apostrophe also get the spelling without it ("o'brien" +
    "obrien");
  * multi-word values are split into their capitalised words; particles
    ("van", "de", "da", "bin"...) go to name_particles.txt, never into the lists;
  * Polish female surnames are derived from the male -ski/-cki/-dzki forms
    (Faker derives them the same way at run time: Kowalski -> Kowalska);
  * nothing in name_stoplist.txt survives in either list (checked on every
    variant). The stop list is: every categorical value and value token of the
    two real datasets in <repo>/datasets (UCI Adult, German Credit), and their
    column names; the common-English word list that Faker's en_US lorem
    provider uses for its sentences; and the short hand list HAND_STOP below.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import os
import re
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINNED_FAKER = "40.63.0"
REPO = HERE.parents[2]  # crates/citadel-pii/data -> repo root

# Locales read, by language group (only Latin-script attributes are kept).
GIVEN_LOCALES = {
    "English (US/UK/IE/NZ)": ["en_US", "en_GB", "en_IE", "en_NZ"],
    "German": ["de_DE", "de_AT", "de_CH"],
    "French": ["fr_FR", "fr_BE", "fr_CH", "fr_CA"],
    "Spanish": ["es_ES", "es_MX", "es_AR", "es_CL", "es_CO", "es_CA"],
    "Italian": ["it_IT"],
    "Portuguese": ["pt_PT", "pt_BR"],
    "Dutch": ["nl_NL", "nl_BE"],
    "Polish": ["pl_PL"],
    "Turkish": ["tr_TR"],
    "Indian (romanized)": ["en_IN"],
    "Chinese (pinyin, Wade-Giles)": ["zh_CN", "zh_TW"],
    "Japanese (romaji)": ["ja_JP"],
    "Arabic (romanized: Algerian, Pakistani)": ["fr_DZ", "en_PK"],
}
SURNAME_LOCALES = GIVEN_LOCALES

GIVEN_ATTRS = [
    "first_names", "first_names_female", "first_names_male", "first_names_nonbinary",
    "first_romanized_names", "first_romanized_names_female", "first_romanized_names_male",
]
SURNAME_ATTRS = [
    "last_names", "last_names_female", "last_names_male", "male_last_names",
    "unisex_last_names", "last_romanized_names",
]

# Common English words that are also names and would raise false alarms in
# ordinary data columns (categorical values, product and place words, months,
# colours, directions, statuses...). Faker's lorem word list and the dataset
# values cover many more; this list adds what they miss.
HAND_STOP = """
will may june april july august march january february september october november december
monday tuesday wednesday thursday friday saturday sunday
spring summer autumn fall winter weeks date zero
grant bill mark rose king queen prince princess duke earl baron lord knight lady
young old new white black brown green gray grey red blue pink orange purple yellow
gold golden silver ivory scarlet
hall wood long little price love north south west east street road lane avenue park
hill field ford bridge brook lake river bay beach forest garden house
castle tower mill well stone rock banks bank marsh moss heath dale glen
paris london berlin rome roma madrid vienna york jersey boston denver dallas houston phoenix
bath urban english german french welsh
male female man woman men women boy girl child gay cis
yes no none null nil nan na other others unknown unspecified true false an
married single divorced widowed separated junior
private public state local federal never self emp inc gov govt ltd llc corp co company
gmbh sa ag plc bv nv srl spa
cash card check cheque credit debit bond gross fee loan payer holder
low high medium mid small large big short tall lower blank bogus fresh
good best better fine fair poor rich free own rent
day night noon week weekend month year today
cross page case hunt cook bell bird fox wolf lamb bush sharp strong sweet
major general captain judge bishop marshal sheriff chancellor mayor mayoral senator
priest pope monk monks pastor imam baptist guard contractor merchant miner diver reader
master steward warrior killer mentor
sale sales deal gift bonus
active inactive pending open closed used constant
comment colon post block branch brands bus tank ring mall font dash drum server forum edit
kidney lung gut nail
rice salmon herring champagne kale ale tea salami romaine
come sad mad harm harsh lean loot raid ties till toy kick joke greet laze rim sole canal
corona divan eta meta fem grit gust lode lore mare mart veer cord feline lucky albino van
amble convey drub grab hug kiss moan renders sip sunder held rode blot cant cares damps
mans sitters spies smolders freely lucid sane supple hasty canny richer warmer barer
moron bigot schmuck junk hell emo
""".split()


# Particles of compound names ("van der Berg", "de la Fuente", "Da Silva"):
# never a name alone. Written to name_particles.txt and kept out of the lists.
PARTICLES = """
van von vom de der den des da das do dos du la le les del della delle dei degli di
zu zur und ter ten te het 't 's d' l' y e i el al bin ibn bint abu mac mc st san santa
""".split()
SUFFIXES = {"jr", "sr", "ii", "iii", "iv"}


def name_tokens(raw: str) -> list[str]:
    """A provider value split into the name tokens to keep. Single-word values
    are kept whole; in multi-word values ("Hans Dieter", "Da Silva", "van der
    Dussen", "García Márquez") each capitalised word that is not a particle or
    a generational suffix is kept on its own, and lower-case words (particles
    by convention) are dropped."""
    words = [w.strip(",") for w in raw.split()]
    if len(words) == 1:
        return words
    out = []
    for w in words:
        lw = w.lower()
        if not w or not w[0].isupper() or lw in PARTICLES or lw.rstrip(".") in SUFFIXES:
            continue
        out.append(w)
    return out


def fold(s: str) -> str:
    """ASCII-fold: strip accents and map letters without a decomposition."""
    special = {
        "ı": "i", "ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "đ": "d",
        "ð": "d", "þ": "th", "ŀ": "l", "ħ": "h",
    }
    s = "".join(special.get(c, c) for c in s)
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c))


def german_fold(s: str) -> str:
    return fold(s.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue"))


UNI_OK = re.compile(r"^[^\W\d_]+(?:['-][^\W\d_]+)*$")
ASCII_OK = re.compile(r"^[a-z]+(?:['-][a-z]+)*$")


def normalize(raw: str) -> str | None:
    s = unicodedata.normalize("NFC", raw.strip())
    for q in "’‘ʼ´`ʻ":
        s = s.replace(q, "'")
    s = s.lower()
    # Turkish capital dotted I lower-cases to "i" + combining dot above.
    s = unicodedata.normalize("NFC", s.replace("i\u0307", "i"))
    if len(s) < 2 or not UNI_OK.match(s):
        return None
    if not ASCII_OK.match(fold(s)):
        return None  # not Latin script
    return s


def variants(name: str, german: bool) -> set[str]:
    out = {name, fold(name)}
    if german:
        out.add(german_fold(name))
    for v in list(out):
        if "'" in v:
            out.add(v.replace("'", ""))
    return {v for v in out if len(v) >= 2}


def provider_values(locale: str, attrs: list[str]) -> list[str]:
    """Values of the named attributes, defined by the locale's own provider
    classes (the generic base provider's placeholders, e.g. "John"/"Doe", are
    not taken)."""
    from faker import Generator

    mod = importlib.import_module(f"faker.providers.person.{locale}")
    inst = mod.Provider(Generator())  # some lists are properties
    values: list[str] = []
    for cls in inspect.getmro(mod.Provider):
        m = cls.__module__
        if not m.startswith("faker.providers.person.") or m == "faker.providers.person":
            continue
        for a in attrs:
            if a not in vars(cls):
                continue
            v = getattr(inst, a)
            vals = list(v.keys()) if isinstance(v, dict) else list(v)
            values.extend(x for x in vals if isinstance(x, str))
    return values


def polish_female(surnames: list[str]) -> list[str]:
    out = []
    for s in surnames:
        for m, f in (("dzki", "dzka"), ("cki", "cka"), ("ski", "ska")):
            if s.endswith(m):
                out.append(s[: -len(m)] + f)
                break
    return out


def dataset_tokens(datasets: Path) -> set[str]:
    """Every categorical value (whole, lower-cased) and every letter token in it,
    plus the column names, of UCI Adult and German Credit."""
    toks: set[str] = set()

    def add(value: str) -> None:
        v = value.strip().rstrip(".").strip().lower()
        if not v or re.fullmatch(r"[-+]?[0-9.]+", v) or v == "?":
            return
        toks.add(v)
        toks.update(t for t in re.split(r"[^a-z]+", fold(v)) if t)

    adult_cols = [
        "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
        "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
        "hours-per-week", "native-country", "income",
    ]
    for c in adult_cols:
        add(c)
    for name in ("adult.data", "adult.test"):
        with open(datasets / "adult" / name, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if len(row) < 2:
                    continue  # blank line, or adult.test's first junk line
                for v in row:
                    add(v)
    with open(datasets / "german-credit" / "german.csv", newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            for v in row:
                add(v)
    # Keep only plain word tokens/values (a stop list of names is compared
    # with lower-cased name tokens); multi-word values are kept as well.
    return {t for t in toks if len(t) >= 1}


def lorem_words() -> set[str]:
    mod = importlib.import_module("faker.providers.lorem.en_US")
    return {w.lower() for w in mod.Provider.word_list}


def build(datasets: Path) -> dict:
    try:
        import faker
    except ImportError:
        venv = "/tmp/pii-venv"
        if os.path.exists(f"{venv}/bin/python3") and sys.prefix != venv:
            # The venv that SOURCES.md tells to make: run there instead.
            os.execv(f"{venv}/bin/python3", [f"{venv}/bin/python3", *sys.argv])
        sys.exit("Faker is not importable: python3 -m venv /tmp/pii-venv && "
                 "/tmp/pii-venv/bin/pip install Faker==40.63.0")

    if faker.VERSION != PINNED_FAKER:
        print(f"warning: Faker {faker.VERSION}, the lists were made with {PINNED_FAKER}",
              file=sys.stderr)
    parts = {
        "dataset values and tokens (UCI Adult, German Credit)": dataset_tokens(datasets),
        "Faker en_US lorem word list": lorem_words(),
        "hand list (HAND_STOP in make_names.py)": {w.lower() for w in HAND_STOP},
    }
    stop = set().union(*parts.values())
    result = {"faker_version": faker.VERSION, "stop": stop,
              "stop_parts": {k: len(v) for k, v in parts.items()}}
    for kind, locales_by_lang, attrs in (
        ("given", GIVEN_LOCALES, GIVEN_ATTRS),
        ("surname", SURNAME_LOCALES, SURNAME_ATTRS),
    ):
        names: set[str] = set()
        raw_count = 0
        per_lang: dict[str, tuple[int, set[str]]] = {}
        for lang, locales in locales_by_lang.items():
            lang_names: set[str] = set()
            lang_raw = 0
            for loc in locales:
                vals = provider_values(loc, attrs)
                if kind == "surname" and loc == "pl_PL":
                    base = provider_values(loc, ["male_last_names", "unisex_last_names"])
                    vals += polish_female(base)
                lang_raw += len(vals)
                german = loc.startswith("de_")
                for raw in vals:
                    for tok in name_tokens(raw):
                        n = normalize(tok)
                        if n is not None:
                            lang_names |= variants(n, german)
            raw_count += lang_raw
            names |= lang_names
            per_lang[lang] = (lang_raw, lang_names)

        def keep(n: str) -> bool:
            return n not in stop and n not in PARTICLES

        result[kind] = sorted(n for n in names if keep(n))
        result[kind + "_dropped"] = sorted(n for n in names if not keep(n))
        result[kind + "_raw"] = raw_count
        result[kind + "_per_lang"] = {
            lang: (r, sum(1 for n in ns if keep(n))) for lang, (r, ns) in per_lang.items()
        }
    return result


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def sources_md(r: dict, sizes: dict[str, int]) -> str:
    rows = []
    for lang, locales in GIVEN_LOCALES.items():
        gr, gk = r["given_per_lang"][lang]
        sr, sk = r["surname_per_lang"][lang]
        rows.append(f"| {lang} | {', '.join(locales)} | {gr} | {gk} | {sr} | {sk} |")
    stop_rows = "\n".join(f"| {k} | {v} |" for k, v in r["stop_parts"].items())
    return f"""# Name lists: sources

Generated by `make_names.py` in this folder; do not edit the lists by hand.

| file | entries | bytes |
|---|---|---|
| given_names.txt | {len(r['given'])} | {sizes['given_names.txt']} |
| surnames.txt | {len(r['surname'])} | {sizes['surnames.txt']} |
| name_stoplist.txt | {len(r['stop'])} | {sizes['name_stoplist.txt']} |
| name_particles.txt | {len(set(PARTICLES))} | {sizes['name_particles.txt']} |

## Source

- Package: **Faker {r['faker_version']}** (PyPI `Faker`, https://github.com/joke2k/faker),
  licence **MIT** (Copyright (c) 2012 Daniele Faraglia). The lists are read from the
  attributes of the locale person providers, `faker/providers/person/<locale>/__init__.py`
  (`{'`, `'.join(GIVEN_ATTRS)}` for given names; `{'`, `'.join(SURNAME_ATTRS)}` for
  surnames), by importing the modules: nothing is copied by hand. Only the attributes defined
  by a locale's own classes are read (not the generic base provider's "John"/"Jane"/"Doe").
- Derived entries: words of multi-word values (rule 2); Polish female surnames from the male -ski/-cki/-dzki forms (Faker
  derives them the same way); ASCII-folded, German ae/oe/ue and apostrophe-less variants.
- Not used: locales whose names are only in a non-Latin script (hi_IN, ar_AA, ar_DZ,
  ar_SA, ja_JP kanji/kana, zh_* hanzi); their romanized lists (ja_JP, zh_CN, zh_TW
  `*_romanized_*`) and Latin-script neighbours (en_IN for Indian names, fr_DZ and en_PK
  for romanized Arabic names) are used instead.

| language group | Faker locales | given: raw values | given: kept entries | surnames: raw values | surnames: kept entries |
|---|---|---|---|---|---|
{chr(10).join(rows)}

"raw values" counts the provider attributes' values before de-duplication (the same name
appears in several attributes: female + all); "kept entries" counts distinct lower-case
entries contributed by that group after normalisation, variants and the stop list (a
name shared by two groups is counted in both). Totals: given names {len(r['given'])}
(from {r['given_raw']} raw values, {len(r['given_dropped'])} removed by the stop list),
surnames {len(r['surname'])} (from {r['surname_raw']} raw values,
{len(r['surname_dropped'])} removed by the stop list).

## Rules

1. Lower case, Unicode NFC; typographic apostrophes become `'`.
2. Kept: letters only, plus internal hyphen or apostrophe (`anne-marie`, `o'brien`),
   length >= 2, Latin script (its ASCII folding must be `[a-z'-]`); dots and digits
   are dropped (`H.-Dieter`, `Hans D.`). Multi-word values are split: each capitalised
   word that is not a particle or a generational suffix is kept on its own (`Hans Dieter`
   -> `hans`, `dieter`; `García Márquez` -> both; `van der Dussen`, `Da Silva` ->
   `dussen`, `silva`); lower-case words are particles by convention and are dropped.
   The particles (`van`, `der`, `de`, `da`, `dos`, `la`, `le`, `von`, `bin`, `al`...)
   are written to `name_particles.txt` and are never in the name lists themselves: a
   matcher can accept them between a given name and a surname.
3. Variants beside the original: the ASCII folding (`josé` + `jose`, `yılmaz` + `yilmaz`,
   `łukasz` + `lukasz`, `sören` + `soren` + `soeren`, `strauß` + `strauss`); for German locales the
   ae/oe/ue spelling (`müller` + `mueller` + `muller`); without the apostrophe
   (`o'brien` + `obrien`). Hyphenated names are kept whole (`chia-hao`, `jean-pierre`):
   a matcher that splits on hyphens should also look up the parts.
4. Nothing in `name_stoplist.txt` or `name_particles.txt` is in either list. An accented
   entry whose folding is a stop word stays, without that folding (`löwer` and `loewer`
   stay, `lower` does not).

## Stop list (`name_stoplist.txt`)

| part | entries |
|---|---|
{stop_rows}

- Dataset part: every categorical value of `datasets/adult/adult.data`, `adult.test`
  (UCI Adult, CC BY 4.0) and `datasets/german-credit/german.csv` (Statlog German Credit,
  DbCL v1.0), lower-cased, whole (`self-emp-not-inc`, `radio/tv`) and split into letter
  tokens (`self`, `emp`, `not`, `inc`), plus the column names. So no categorical value or
  value token of those files is in a name list (`make_names.py` asserts it).
- Lorem part: the ~1,000 common English words that Faker's en_US lorem provider builds its
  sentences from (`faker/providers/lorem/en_US`), so that ordinary English prose (and
  Faker-made clean notes in the fixtures) contains no name-list word.
- Hand part: months, weekdays, seasons, colours, directions, place and street words,
  big-city names, genders, yes/no/unknown, marital and employment statuses, company
  suffixes, payment and financial words, sizes and grades, titles and occupations that are
  mostly words (mayor, priest, contractor...), body parts, foods, and other common words
  that are also rare names. It removes some real names (`grant`, `rose`, `king`, `young`,
  `white`, `urban`, `german`, `french`...) on purpose: a column of such words is far more
  often a category than a name. Common names that are also words but are mostly names in
  data (`john`, `smith`, `miller`, `mason`, `lily`, `ruby`, `grace`, `faith`, `said`) stay.

## Regenerate

```sh
python3 -m venv /tmp/pii-venv
/tmp/pii-venv/bin/pip install Faker=={r['faker_version']}
cd crates/citadel-pii/data && python3 make_names.py
```

(`make_names.py` re-runs itself under `/tmp/pii-venv` when the interpreter lacks Faker;
`--datasets DIR` if the datasets are not at `<repo>/datasets`.) The output is deterministic for a given Faker
version; another version may add or remove names.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=REPO / "datasets",
                    help="folder with adult/ and german-credit/ (default: <repo>/datasets)")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    r = build(args.datasets)
    stop_sorted = sorted(r["stop"])
    write_lines(args.out / "given_names.txt", r["given"])
    write_lines(args.out / "surnames.txt", r["surname"])
    write_lines(args.out / "name_stoplist.txt", stop_sorted)
    write_lines(args.out / "name_particles.txt", sorted(set(PARTICLES)))
    # Self-checks.
    stop = set(stop_sorted)
    for kind in ("given", "surname"):
        lst = r[kind]
        assert lst == sorted(set(lst)), kind
        assert not (set(lst) & stop), kind
        present = set(lst)
        for n in lst:
            assert len(n) >= 2 and UNI_OK.match(n), n
            assert fold(n) in present or fold(n) in stop or fold(n) in PARTICLES, \
                f"missing folded variant of {n}"
    sizes = {f: (args.out / f).stat().st_size
             for f in ("given_names.txt", "surnames.txt", "name_stoplist.txt",
                       "name_particles.txt")}
    (args.out / "SOURCES.md").write_text(sources_md(r, sizes), encoding="utf-8")
    print(f"Faker {r['faker_version']}")
    for kind in ("given", "surname"):
        print(f"{kind}: {len(r[kind])} kept (from {r[kind + '_raw']} raw values), "
              f"{len(r[kind + '_dropped'])} dropped by the stop list")
    print(f"stop list: {len(stop_sorted)} entries; total bytes {sum(sizes.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
