//! `parkcast import`: real occupancy data into a warehouse.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use parkcast_training::datasets;
use parkcast_training::import::{self, ImportSource};

use super::GlobalArgs;
use super::args::WarehouseLocation;
use crate::progress::BarProgress;
use crate::report;

/// Arguments of `parkcast import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
    #[command(subcommand)]
    pub source: SourceArgs,
}

/// What to import. Paths default to the data sets in `../shared/datasets` (or `$PARKCAST_DATASETS`).
#[derive(Debug, Subcommand)]
pub enum SourceArgs {
    /// Birmingham, Málaga and Melbourne, one after the other.
    All,
    /// UCI "Parking Birmingham": 30 garages, Oct-Dec 2016, every ~30 min (local time Europe/London).
    Birmingham {
        /// parking_birmingham.csv
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Málaga municipal garages, 2022-2026, every ~10 min (local time Europe/Madrid).
    Malaga {
        /// free_spaces_long.csv.gz
        #[arg(long)]
        csv_gz: Option<PathBuf>,
        /// lots.csv (names and coordinates)
        #[arg(long)]
        lots: Option<PathBuf>,
    },
    /// City of Melbourne bay sensors: every stay of 12 June 2014, as slot sessions and status events.
    Melbourne {
        /// bay_events_2014-06-12.csv
        #[arg(long)]
        events: Option<PathBuf>,
        /// bay_locations.json
        #[arg(long)]
        locations: Option<PathBuf>,
        /// Interval of the derived lot occupancy, minutes.
        #[arg(long, default_value_t = 5)]
        interval: u32,
    },
    /// A generic CSV: `lot_id,timestamp,occupied|free,capacity` (see README, "Importing your data").
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// Name of the source (ids are prefixed `csv-<name>:`; re-importing a name replaces it).
        #[arg(long)]
        name: String,
        /// Time zone of naive timestamps (IANA name, e.g. Europe/Paris).
        #[arg(long)]
        timezone: Option<chrono_tz::Tz>,
        /// Holiday region for the calendar (ISO 3166 CC or CC-SUB, e.g. FR, ES-AN, DE-SN).
        #[arg(long)]
        region: Option<String>,
        /// A calendar file (CSV: region,kind,first_day,last_day,name,source) that adds your own
        /// region or replaces an embedded one's public or school holidays (see README, "Importing
        /// your data"); kept in the warehouse so training uses it too.
        #[arg(long, requires = "region")]
        calendar_file: Option<PathBuf>,
        /// For a source that writes only changes (a value logged when it changes, nothing in
        /// between): a reading holds until the next one, for at most this long (e.g. 2h, 90m,
        /// 1h30m, 1d; at most 7d). Stored with the lots; the trainer fills its grid from it.
        #[arg(long, value_name = "DURATION", value_parser = parse_fill_forward)]
        fill_forward: Option<u32>,
    },
}

impl SourceArgs {
    /// The sources this asks for, with default paths filled in.
    pub fn sources(self) -> Vec<ImportSource> {
        match self {
            SourceArgs::All => datasets::all(),
            SourceArgs::Birmingham { csv } => vec![datasets::birmingham(csv)],
            SourceArgs::Malaga { csv_gz, lots } => vec![datasets::malaga(csv_gz, lots)],
            SourceArgs::Melbourne {
                events,
                locations,
                interval,
            } => vec![datasets::melbourne_from(events, locations, interval)],
            SourceArgs::Csv {
                path,
                name,
                timezone,
                region,
                calendar_file,
                fill_forward,
            } => {
                vec![ImportSource::Csv {
                    path,
                    name,
                    timezone,
                    holiday_region: region,
                    calendar_file,
                    hold_minutes: fill_forward,
                }]
            }
        }
    }
}

/// `--fill-forward` as minutes: a duration of 1 minute to 7 days.
fn parse_fill_forward(text: &str) -> Result<u32, String> {
    import::coverage::parse_hold(text).map_err(|error| error.to_string())
}

pub fn run(args: ImportArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = super::args::create_warehouse(&args.location.warehouse)?;
    for source in args.source.sources() {
        tracing::info!(source = %source.writer_name(), "importing");
        let report = BarProgress::run(global.quiet, |progress| {
            import::import(&source, &warehouse, progress)
        })
        .with_context(|| format!("failed to import {}", source.writer_name()))?;
        println!("{}", report::import_summary(&report));
    }
    Ok(())
}
