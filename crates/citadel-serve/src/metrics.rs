//! Prometheus metrics. Labels are endpoint, model, version, principal name
//! and status: never a token, a payload value or a request id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub model: String,
    pub version: String,
    pub principal: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub endpoint: String,
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub endpoint: String,
    pub principal: String,
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub endpoint: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    pub kind: String,
    pub severity: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily<ModelLabels>,
    pub errors: Family<ErrorLabels, Counter>,
    pub rate_limited: Family<LimitLabels, Counter>,
    pub shadow_requests: Family<ModelLabels, Counter>,
    pub shadow_disagreements: Family<ModelLabels, Counter>,
    pub model_load_failures: Family<ModelLabels, Counter>,
    pub connections: Gauge,
    pub monitor_failures: Counter,
    pub monitor_dropped: Counter,
    pub incidents_open: Family<IncidentLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("citadel");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<ModelLabels> = Family::new_with_constructor(latency_histogram);
        let errors = Family::<ErrorLabels, Counter>::default();
        let rate_limited = Family::<LimitLabels, Counter>::default();
        let shadow_requests = Family::<ModelLabels, Counter>::default();
        let shadow_disagreements = Family::<ModelLabels, Counter>::default();
        let model_load_failures = Family::<ModelLabels, Counter>::default();
        let connections = Gauge::default();
        let monitor_failures = Counter::default();
        let monitor_dropped = Counter::default();
        registry.register(
            "monitor_dropped",
            "Served requests not sketched because the monitoring queue was full (the sketches are then a sample)",
            monitor_dropped.clone(),
        );
        let incidents_open = Family::<IncidentLabels, Gauge>::default();
        registry.register(
            "monitor_failures",
            "Monitoring windows that could not be written or judged (serving went on)",
            monitor_failures.clone(),
        );
        registry.register(
            "incidents_open",
            "Incidents open or acknowledged, by kind and severity",
            incidents_open.clone(),
        );
        registry.register(
            "inference_requests",
            "Inference requests by endpoint, model version, principal and status",
            requests.clone(),
        );
        registry.register(
            "inference_latency_seconds",
            "Time from request to response for answered inferences",
            latency.clone(),
        );
        registry.register("request_errors", "Requests refused or failed, by kind", errors.clone());
        registry.register(
            "rate_limited",
            "Requests answered 429, by the limit that refused them",
            rate_limited.clone(),
        );
        registry.register("shadow_requests", "Requests mirrored to a shadow model", shadow_requests.clone());
        registry.register(
            "shadow_disagreements",
            "Mirrored requests whose first output differed from the served one",
            shadow_disagreements.clone(),
        );
        registry.register(
            "model_load_failures",
            "Model versions refused at load (verification or compilation)",
            model_load_failures.clone(),
        );
        registry.register("open_connections", "Client connections currently open", connections.clone());
        Metrics {
            registry,
            requests,
            latency,
            errors,
            rate_limited,
            shadow_requests,
            shadow_disagreements,
            model_load_failures,
            connections,
            monitor_failures,
            monitor_dropped,
            incidents_open,
        }
    }

    /// The Prometheus text format (0.0.4). prometheus-client writes
    /// OpenMetrics, where a counter family `x` has samples `x_total`; the
    /// Prometheus format wants the family named `x_total`, and has no
    /// `# EOF` or `# UNIT` lines.
    pub fn encode(&self) -> String {
        let mut open_metrics = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry);
        let counters: std::collections::HashSet<String> = open_metrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|r| r.strip_suffix(" counter")).map(str::to_string))
            .collect();
        let mut out = String::with_capacity(open_metrics.len());
        for line in open_metrics.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
