#!/usr/bin/env python3
"""Regenerates features/data/holidays.csv from the maintained python-holidays package.

parkcast embeds this file (features/src/calendar.rs) so the binary needs no network and no heavy
dependency. Run it to refresh the data or add regions:

    python3 -m venv .venv-holidays && .venv-holidays/bin/pip install holidays==0.109
    .venv-holidays/bin/python scripts/gen_holidays.py features/data

It writes holidays.csv (rows: region,date,name) and regions.txt (every supported region code). A country's own rows are under its ISO code (GB); a subdivision's rows
(GB-ENG) hold only the dates the subdivision adds to the country's, so a lookup merges the two.
"""
import csv
import sys

import holidays

YEARS = range(2000, 2051)
COUNTRIES_WITH_SUBDIVISIONS = ["GB", "ES", "AU"]
COUNTRIES = ["AT", "BE", "CH", "DE", "DK", "FI", "FR", "IE", "IT", "NL", "NO", "PL", "PT", "SE", "US"]


def main(out_dir: str) -> None:
    regions = []
    with open(f"{out_dir}/holidays.csv", "w", encoding="utf-8", newline="") as out:
        write_holidays(csv.writer(out, lineterminator="\n"), regions)
    with open(f"{out_dir}/regions.txt", "w", encoding="utf-8") as out:
        out.write(f"# holidays {holidays.__version__}, years {YEARS.start}-{YEARS.stop - 1}\n")
        out.writelines(f"{region}\n" for region in regions)


def write_holidays(writer, regions: list) -> None:
    writer.writerow(["region", "date", "name"])
    for country in sorted(COUNTRIES_WITH_SUBDIVISIONS + COUNTRIES):
        regions.append(country)
        national = holidays.country_holidays(country, years=YEARS, language="en_US")
        for date, name in sorted(national.items()):
            writer.writerow([country, date.isoformat(), name])
        if country not in COUNTRIES_WITH_SUBDIVISIONS:
            continue
        for subdivision in sorted(holidays.list_supported_countries()[country]):
            regions.append(f"{country}-{subdivision}")
            regional = holidays.country_holidays(country, subdiv=subdivision, years=YEARS, language="en_US")
            for date, name in sorted(regional.items()):
                if date not in national:
                    writer.writerow([f"{country}-{subdivision}", date.isoformat(), name])


if __name__ == "__main__":
    main(sys.argv[1])
