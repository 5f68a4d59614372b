#!/usr/bin/env python3
"""Regenerates the embedded calendar tables of features/data from the maintained python-holidays package.

parkcast embeds these files (features/src/calendar.rs) so the binary needs no network and no heavy
dependency. Run it to refresh the data or add regions:

    python3 -m venv .venv-holidays && .venv-holidays/bin/pip install holidays==0.109
    .venv-holidays/bin/python scripts/gen_holidays.py features/data

It writes (features/data/README.md describes every column):

- holidays.csv (region,date,name): public holidays. A country's rows are under its ISO code (GB); a
  subdivision's rows (GB-ENG, DE-SN) hold only how it differs from its country: a date it adds, a
  date whose name differs, or, with an empty name, a national date the subdivision does not keep
  (the Australian states observe some national days differently). A lookup applies the
  subdivision's rows over the country's.
- school_holidays.csv (region,kind,first_day,last_day,name,source): the school holidays of the
  package's `school` category, one row per run of days with one name, and per region one
  `school_coverage` row per run of years the package has school data for (outside them school
  holidays are unknown, not absent).
- regions.txt: every region code, with the package version and years.

school_holidays_authorities.csv is written by hand from the school authorities' calendars where no
package has the data (England, Andalusia, Victoria before 2026); this script does not touch it.
Subdivision codes that are not ASCII letters and digits (python-holidays' "NSW Western", France's
school "Zone A") are left out: a region code is CC or CC-SUB.
"""
import csv
import sys
from datetime import date, timedelta

import holidays

YEARS = range(2000, 2051)
# Every subdivision python-holidays knows, for each of these countries.
COUNTRIES = [
    "AT", "AU", "BE", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IT", "NL", "NO", "PL",
    "PT", "SE", "US",
]
SOURCE = "python-holidays"  # the version is in the header line and regions.txt


def main(out_dir: str) -> None:
    regions = []
    with open(f"{out_dir}/holidays.csv", "w", encoding="utf-8", newline="") as out:
        write_public(csv.writer(out, lineterminator="\n"), regions)
    with open(f"{out_dir}/school_holidays.csv", "w", encoding="utf-8", newline="") as out:
        out.write(
            f"# School holidays from python-holidays {holidays.__version__} (scripts/gen_holidays.py);"
            " see README.md in this folder\n"
        )
        write_school(csv.writer(out, lineterminator="\n"))
    with open(f"{out_dir}/regions.txt", "w", encoding="utf-8") as out:
        out.write(f"# holidays {holidays.__version__}, years {YEARS.start}-{YEARS.stop - 1}\n")
        out.writelines(f"{region}\n" for region in regions)


def subdivisions(country: str) -> list:
    return sorted(
        code
        for code in holidays.list_supported_countries()[country]
        if code.isascii() and code.isalnum()
    )


def write_public(writer, regions: list) -> None:
    writer.writerow(["region", "date", "name"])
    for country in COUNTRIES:
        regions.append(country)
        national = holidays.country_holidays(country, years=YEARS, language="en_US")
        for day, name in sorted(national.items()):
            writer.writerow([country, day.isoformat(), name])
        for subdivision in subdivisions(country):
            region = f"{country}-{subdivision}"
            regions.append(region)
            regional = holidays.country_holidays(
                country, subdiv=subdivision, years=YEARS, language="en_US"
            )
            differences = {
                day: name for day, name in regional.items() if national.get(day) != name
            }
            differences.update({day: "" for day in national if day not in regional})
            for day, name in sorted(differences.items()):
                writer.writerow([region, day.isoformat(), name])


def write_school(writer) -> None:
    writer.writerow(["region", "kind", "first_day", "last_day", "name", "source"])
    for country in COUNTRIES:
        if holidays.SCHOOL not in type(holidays.country_holidays(country)).supported_categories:
            continue
        for subdivision in subdivisions(country):
            school = holidays.country_holidays(
                country,
                subdiv=subdivision,
                years=YEARS,
                categories=(holidays.SCHOOL,),
                language="en_US",
            )
            if not school:
                continue
            region = f"{country}-{subdivision}"
            for first, last in year_runs(sorted({day.year for day in school})):
                writer.writerow(
                    [
                        region,
                        "school_coverage",
                        date(first, 1, 1).isoformat(),
                        date(last, 12, 31).isoformat(),
                        f"school data {first}-{last}",
                        SOURCE,
                    ]
                )
            for first, last, name in day_runs(sorted(school.items())):
                writer.writerow(
                    [region, "school", first.isoformat(), last.isoformat(), name, SOURCE]
                )


def year_runs(years: list) -> list:
    runs = []
    for year in years:
        if runs and runs[-1][1] == year - 1:
            runs[-1][1] = year
        else:
            runs.append([year, year])
    return runs


def day_runs(days: list) -> list:
    runs = []
    for day, name in days:
        if runs and runs[-1][2] == name and runs[-1][1] + timedelta(days=1) == day:
            runs[-1][1] = day
        else:
            runs.append([day, day, name])
    return runs


if __name__ == "__main__":
    main(sys.argv[1])
