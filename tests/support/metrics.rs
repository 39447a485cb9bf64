//! Reading Prometheus text exposition (`/metrics`) in tests: series by name and labels.

use std::collections::BTreeMap;

/// One scrape: every sample line, keyed by its series as written (`name{labels}` or `name`).
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        Self { text: text.to_string(), samples }
    }

    /// The value of one series, e.g. `kvq_writes_refused_total{reason="redis_unavailable"}`;
    /// panics with the whole scrape when it is missing.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// Metric family names as declared by `# TYPE` lines, with the sample suffixes they expose
    /// (`_total`, `_bucket`, `_sum`, `_count`, `_created`): every name a query may use.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for series in self.samples.keys() {
            names.insert(series.split('{').next().unwrap_or(series).to_string());
        }
        names
    }
}

/// Scrapes `url` (a `/metrics` URL).
pub async fn scrape(url: &str) -> Scrape {
    let text = reqwest::get(url).await.expect("scrape").text().await.expect("scrape body");
    Scrape::parse(&text)
}
