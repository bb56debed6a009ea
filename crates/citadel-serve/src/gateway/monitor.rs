//! Live monitoring on the request path: every served request of a model
//! with named inputs is folded into the sketch of its endpoint, model
//! version and window (`citadel_data::sketch`), and the windows go to the
//! metadata database in parts (what was folded since the last part, every
//! [`Monitor::new`]'s `part_secs` while a window is open, and the rest when
//! it closes), where parts and replicas merge and the control plane judges
//! them (`citadel_control::monitor`). A replica killed mid-window loses only
//! what it folded since its last part; a request folded after its window was
//! written goes into a later part of the same window instead of being refused.
//!
//! What is kept: per input feature a KLL sketch (numbers) or counts over the
//! model's own vocabulary (categories; other values are counted, never
//! kept), the predicted class or value, and per principal the counts the
//! abuse detectors read. The principal's previous row is kept (as hashes
//! of its values) only to tell whether the next one is a small change of
//! it. Inputs named like a protected column of the training data are not
//! sketched. Memory is bounded: sketches are O(k log n), at most
//! [`MAX_PRINCIPALS`] principals a window are tracked apart (the rest share
//! one entry), and the repeated-row set holds at most [`MAX_SEEN`] hashes a
//! principal.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use citadel_control::{PredictionRecord, Target, WindowRecord};
use citadel_data::sketch::{AuthWindow, BOUNDARY_MARGIN, FeatureSketch, PrincipalWindow, WindowSketch};
use citadel_infer::{Data, Model, Tensor};
use citadel_types::Timestamp;

/// Principals tracked apart in one window; others share [`OTHERS`].
pub const MAX_PRINCIPALS: usize = 1_000;
pub const OTHERS: &str = "(others)";
/// Row hashes kept per principal and window to count repeated rows.
pub const MAX_SEEN: usize = 8_192;
/// Rows of one request whose predictions are logged for feedback.
pub const MAX_LOGGED_ROWS: usize = 10_000;

/// How a model's inputs and outputs are sketched (made once per loaded version).
#[derive(Debug)]
pub(super) struct MonitorPlan {
    /// Aligned with the model's inputs; `None`: not sketched.
    features: Vec<Option<FeaturePlan>>,
    prediction: PredictionPlan,
}

#[derive(Debug)]
enum FeaturePlan {
    Numeric {
        name: String,
        range: Option<(f64, f64)>,
    },
    /// `index`: category → position, with a fast hasher (lookups only: the
    /// table holds the model's vocabulary, never a client's string).
    Categorical {
        name: String,
        vocabulary: Vec<String>,
        index: HashMap<String, usize, foldhash::fast::RandomState>,
    },
}

#[derive(Debug)]
enum PredictionPlan {
    /// Class probabilities `[N, K]` at this output, with the class names.
    Classes {
        output: usize,
        classes: Vec<String>,
    },
    /// A predicted value `[N, 1]` or `[N]` at this output.
    Value {
        output: usize,
    },
    None,
}

impl MonitorPlan {
    /// The plan for a named-input model (one column per input and
    /// `citadel.inputs` metadata); `None` for others, which are not sketched.
    pub(super) fn of(model: &Model, schema: &crate::named::Schema, protected: &[String]) -> Option<MonitorPlan> {
        if schema.inputs.is_empty() || !crate::named::takes_columns(model) {
            return None;
        }
        let features = model
            .inputs
            .iter()
            .map(|i| {
                if protected.contains(&i.name) {
                    return None;
                }
                let meta = schema.inputs.get(&i.name)?;
                match meta.get("kind")?.as_str()? {
                    "numeric" => {
                        let range = meta["p1"].as_f64().zip(meta["p99"].as_f64());
                        Some(FeaturePlan::Numeric { name: i.name.clone(), range })
                    }
                    "categorical" => {
                        let vocabulary: Vec<String> = meta["categories"]
                            .as_array()?
                            .iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect();
                        let index = vocabulary.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect();
                        Some(FeaturePlan::Categorical { name: i.name.clone(), vocabulary, index })
                    }
                    _ => None,
                }
            })
            .collect();
        let prediction = match &schema.classes {
            Some(classes) => model
                .outputs
                .iter()
                .position(|o| o.shape.len() == 2 && o.shape[1] == Some(classes.len()))
                .map(|output| PredictionPlan::Classes { output, classes: classes.clone() })
                .unwrap_or(PredictionPlan::None),
            None => model
                .outputs
                .iter()
                .position(|o| matches!(o.shape.as_slice(), [_, Some(1)] | [_]))
                .map(|output| PredictionPlan::Value { output })
                .unwrap_or(PredictionPlan::None),
        };
        Some(MonitorPlan { features, prediction })
    }
}

type Key = (String, String, i64, i64);

/// One window of one endpoint and model version on this replica.
#[derive(Debug, Default)]
struct Live {
    window_end: i64,
    /// When the last part of this window was taken (µs; 0: none yet).
    part_taken: i64,
    sketch: WindowSketch,
    tracks: HashMap<String, Track>,
}

/// What the detectors remember of a principal within a window.
#[derive(Debug, Default)]
struct Track {
    previous: Option<(Vec<u64>, Option<usize>)>,
    seen: HashSet<u64, foldhash::fast::RandomState>,
}

/// The replica's live windows and queues, shared by the request path, the
/// folding thread and the flush task.
#[derive(Debug, Default)]
struct State {
    live: Mutex<HashMap<Key, Live>>,
    /// Closed windows whose write failed, retried at the next flush (oldest
    /// dropped past [`MAX_UNWRITTEN`], and counted).
    unwritten: Mutex<Vec<WindowRecord>>,
    /// Predictions to log for the feedback join, oldest first, and how many were dropped.
    predictions: Mutex<(std::collections::VecDeque<PredictionRecord>, u64)>,
    /// Authentication windows by start (µs), gateway-wide.
    auth: Mutex<HashMap<i64, AuthWindow>>,
    /// Tensor elements waiting in the queue (bounded by [`MAX_QUEUED_ELEMENTS`]).
    queued_elements: AtomicUsize,
    /// Requests not sketched because the queue was full.
    dropped: AtomicU64,
}

/// Live monitoring of one gateway. The request path only queues what it
/// served ([`Monitor::observe`]: a few reference-count increments); one
/// thread folds the queue into the windows, so requests never wait on each
/// other for a sketch. When the thread falls behind (the queue holds
/// [`QUEUE`] requests or [`MAX_QUEUED_ELEMENTS`] tensor elements), requests
/// are not sketched, and counted (`citadel_monitor_dropped_total`): the
/// sketches are then a sample of the traffic.
#[derive(Debug)]
pub(super) struct Monitor {
    replica: String,
    state: Arc<State>,
    queue: std::sync::mpsc::SyncSender<Sample>,
    auth_window_secs: u64,
    /// How often an open window's sketch so far is written as a part (µs; 0: only when it closes).
    part_every: i64,
}

/// Requests waiting to be folded.
pub const QUEUE: usize = 16_384;
/// How often the folding thread drains the queue (ms).
pub const POLL_MS: u64 = 5;
/// Tensor elements (inputs and outputs) waiting to be folded.
pub const MAX_QUEUED_ELEMENTS: usize = 8 << 20;

/// A closed authentication window.
pub(super) struct AuthRecord {
    pub start: Timestamp,
    pub end: Timestamp,
    pub window: AuthWindow,
}

/// Closed windows kept for a retry when the database does not take them.
pub const MAX_UNWRITTEN: usize = 1_000;
/// Predictions waiting to be logged (feedback on); the oldest go first past it.
pub const MAX_PREDICTIONS: usize = 200_000;

/// One served request, queued for the folding thread.
pub(super) struct Sample {
    pub endpoint: String,
    pub window_secs: u64,
    pub target: Target,
    pub loaded: Arc<super::Loaded>,
    pub principal: String,
    pub request_id: String,
    pub inputs: Vec<Arc<Tensor>>,
    pub outputs: Arc<Vec<Tensor>>,
    /// Log the predictions for the feedback join.
    pub feedback: bool,
    /// When it was served (µs): which window it belongs to.
    pub at: i64,
}

/// One request, as the fold sees it.
struct Observation<'a> {
    endpoint: &'a str,
    target: &'a Target,
    plan: &'a MonitorPlan,
    principal: &'a str,
    inputs: &'a [Arc<Tensor>],
    outputs: &'a [Tensor],
}

impl Monitor {
    /// `part_secs`: how often an open window's sketch so far is written as a
    /// part (0: a window is written only when it closes).
    pub(super) fn new(auth_window_secs: u64, part_secs: u64) -> Monitor {
        let state = Arc::new(State::default());
        let (queue, rx) = std::sync::mpsc::sync_channel::<Sample>(QUEUE);
        let folding = state.clone();
        // Drains the queue every few milliseconds rather than blocking on it:
        // a blocked receiver must be woken (a futex call) by every request
        // that arrives after it emptied the queue, which cost a third of the
        // gateway's throughput under load. Ends when the Monitor (the sender)
        // is dropped.
        let _ = std::thread::Builder::new().name("citadel-monitor".into()).spawn(move || {
            loop {
                loop {
                    match rx.try_recv() {
                        Ok(sample) => {
                            fold_sample(&folding, &sample);
                            folding.queued_elements.fetch_sub(elements(&sample), Ordering::Relaxed);
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
            }
        });
        Monitor {
            replica: citadel_types::random_id("gw-"),
            state,
            queue,
            auth_window_secs: auth_window_secs.max(1),
            part_every: i64::try_from(part_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        }
    }

    /// Queues one served request for its window (never blocks).
    pub(super) fn observe(&self, sample: Sample) {
        let n = elements(&sample);
        let queued = self.state.queued_elements.fetch_add(n, Ordering::Relaxed);
        if queued + n > MAX_QUEUED_ELEMENTS || self.queue.try_send(sample).is_err() {
            self.state.queued_elements.fetch_sub(n, Ordering::Relaxed);
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests not sketched since the last call.
    pub(super) fn take_dropped(&self) -> u64 {
        self.state.dropped.swap(0, Ordering::Relaxed)
    }

    /// Counts one authentication: a failure from `address`, or `principal`
    /// authenticated from it.
    pub(super) fn observe_auth(&self, principal: Option<&str>, address: &str) {
        let len = self.auth_window_secs as i64 * 1_000_000;
        let now = Timestamp::now().0;
        let start = now - now.rem_euclid(len);
        if let Ok(mut a) = self.state.auth.lock() {
            let w = a.entry(start).or_default();
            match principal {
                Some(p) => w.success(p, address),
                None => w.failure(address),
            }
        }
    }

    /// The authentication windows that ended by `now` (all with `all`).
    pub(super) fn take_auth(&self, now: Timestamp, all: bool) -> Vec<AuthRecord> {
        let len = self.auth_window_secs as i64 * 1_000_000;
        let Ok(mut a) = self.state.auth.lock() else { return Vec::new() };
        let closed: Vec<i64> = a.keys().copied().filter(|s| all || s + len <= now.0).collect();
        closed
            .into_iter()
            .filter_map(|s| {
                let window = a.remove(&s)?;
                Some(AuthRecord { start: Timestamp(s), end: Timestamp(s + len), window })
            })
            .collect()
    }

    pub(super) fn replica(&self) -> &str {
        &self.replica
    }

    /// The queued predictions (at most `max`), and how many were dropped since the last call.
    pub(super) fn take_predictions(&self, max: usize) -> (Vec<PredictionRecord>, u64) {
        let Ok(mut q) = self.state.predictions.lock() else { return (Vec::new(), 0) };
        let n = q.0.len().min(max);
        let out = q.0.drain(..n).collect();
        (out, std::mem::take(&mut q.1))
    }

    /// Puts back predictions whose write failed (in front, still bounded).
    pub(super) fn requeue_predictions(&self, failed: Vec<PredictionRecord>) {
        if let Ok(mut q) = self.state.predictions.lock() {
            for p in failed.into_iter().rev() {
                if q.0.len() >= MAX_PREDICTIONS {
                    q.1 += 1;
                    continue;
                }
                q.0.push_front(p);
            }
        }
    }

    /// Keeps windows whose write failed for the next flush; returns how many
    /// older ones were dropped to stay within [`MAX_UNWRITTEN`].
    pub(super) fn retry_later(&self, failed: Vec<WindowRecord>) -> usize {
        let Ok(mut u) = self.state.unwritten.lock() else { return failed.len() };
        u.extend(failed);
        let over = u.len().saturating_sub(MAX_UNWRITTEN);
        u.drain(..over);
        over
    }

    /// Takes what is to be written, as the records the control plane
    /// stores, after those left from a failed write: every window that ended
    /// by `now` (half a second after its end, so requests still in the queue
    /// reach it), every window with `all`, and of each open window whose last
    /// part is older than the part interval, its sketch so far (the window
    /// goes on from an empty sketch; what the detectors remember of each
    /// principal stays). Each record gets its part id here and keeps it
    /// through retries, so a write retried after its acknowledgement was lost
    /// is stored once.
    pub(super) fn take_closed(&self, now: Timestamp, all: bool) -> Vec<WindowRecord> {
        let mut out = self.state.unwritten.lock().map(|mut u| std::mem::take(&mut *u)).unwrap_or_default();
        let Ok(mut map) = self.state.live.lock() else { return out };
        let closed: Vec<Key> =
            map.iter().filter(|(_, l)| all || l.window_end + 500_000 <= now.0).map(|(k, _)| k.clone()).collect();
        for k in closed {
            if let Some(live) = map.remove(&k) {
                out.push(self.record(&k, live.window_end, live.sketch));
            }
        }
        if self.part_every > 0 {
            for (k, live) in map.iter_mut() {
                let since = if live.part_taken == 0 { k.3 } else { live.part_taken };
                if live.sketch.requests > 0 && now.0 - since >= self.part_every {
                    live.part_taken = now.0;
                    let sketch = std::mem::take(&mut live.sketch);
                    out.push(self.record(k, live.window_end, sketch));
                }
            }
        }
        out
    }

    fn record(&self, k: &Key, window_end: i64, sketch: WindowSketch) -> WindowRecord {
        WindowRecord {
            endpoint: k.0.clone(),
            model: k.1.clone(),
            version: k.2,
            window_start: Timestamp(k.3),
            window_end: Timestamp(window_end),
            replica: self.replica.clone(),
            part: citadel_types::random_id("p-"),
            sketch,
        }
    }
}

fn elements(s: &Sample) -> usize {
    s.inputs.iter().map(|t| t.len()).sum::<usize>() + s.outputs.iter().map(|t| t.len()).sum::<usize>()
}

/// Folds one queued request into its window (and logs its predictions).
fn fold_sample(state: &State, s: &Sample) {
    let Some(plan) = &s.loaded.monitor_plan else { return };
    let o = Observation {
        endpoint: &s.endpoint,
        target: &s.target,
        plan,
        principal: &s.principal,
        inputs: &s.inputs,
        outputs: &s.outputs,
    };
    let len = s.window_secs.max(1) as i64 * 1_000_000;
    let start = s.at - s.at.rem_euclid(len);
    if let Ok(mut map) = state.live.lock() {
        let key: Key = (s.endpoint.clone(), s.target.model.clone(), s.target.version, start);
        let live = map.entry(key).or_insert_with(|| Live { window_end: start + len, ..Default::default() });
        fold(live, &o);
    }
    if s.feedback {
        log_predictions(state, &o, &s.request_id);
    }
}

/// Queues a classifier's predictions of one request for the feedback join
/// (its predicted class and that class's probability per row).
fn log_predictions(state: &State, o: &Observation<'_>, request_id: &str) {
    let PredictionPlan::Classes { output, classes } = &o.plan.prediction else { return };
    let Some(t) = o.outputs.get(*output) else { return };
    let k = classes.len();
    let rows = t.shape.first().copied().unwrap_or(0);
    let at = Timestamp::now();
    let mut batch = Vec::with_capacity(rows);
    for r in 0..rows.min(super::monitor::MAX_LOGGED_ROWS) {
        let probs: Vec<f64> = (0..k).filter_map(|j| number(&t.data, r * k + j)).collect();
        if probs.len() != k {
            continue;
        }
        let (best, score) = probs.iter().enumerate().fold((0, f64::MIN), |a, (j, &x)| if x > a.1 { (j, x) } else { a });
        batch.push(PredictionRecord {
            endpoint: o.endpoint.to_string(),
            request_id: request_id.to_string(),
            row: r as u32,
            model: o.target.model.clone(),
            version: o.target.version,
            predicted: classes[best].clone(),
            score,
            at,
            principal: o.principal.to_string(),
        });
    }
    if let Ok(mut q) = state.predictions.lock() {
        q.0.extend(batch);
        while q.0.len() > MAX_PREDICTIONS {
            q.0.pop_front();
            q.1 += 1;
        }
    }
}

/// Hashes of input values, for "same row" and "changed feature" tests only:
/// a fast hash seeded once per process, so collisions cannot be aimed.
fn hasher() -> impl Hasher {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    SEED.get_or_init(foldhash::fast::RandomState::default).build_hasher()
}

fn number(d: &Data, i: usize) -> Option<f64> {
    match d {
        Data::F32(v) => v.get(i).map(|x| *x as f64),
        Data::F64(v) => v.get(i).copied(),
        Data::I64(v) => v.get(i).map(|x| *x as f64),
        Data::I32(v) => v.get(i).map(|x| *x as f64),
        Data::Bool(v) => v.get(i).map(|x| *x as u8 as f64),
        Data::Str(_) => None,
    }
}

fn value_hash(d: &Data, i: usize) -> u64 {
    let mut h = hasher();
    match d {
        Data::Str(v) => v.get(i).hash(&mut h),
        other => number(other, i).map(f64::to_bits).hash(&mut h),
    }
    h.finish()
}

fn fold(l: &mut Live, o: &Observation<'_>) {
    let rows = o.inputs.first().map(|t| t.shape.first().copied().unwrap_or(t.len())).unwrap_or(0);
    if rows == 0 {
        return;
    }
    let w = &mut l.sketch;
    w.requests += 1;
    w.rows += rows as u64;
    let mut ood = vec![false; rows];
    let mut hashes: Vec<Vec<u64>> = vec![Vec::with_capacity(o.inputs.len()); rows];
    for (plan, t) in o.plan.features.iter().zip(o.inputs) {
        for (r, h) in hashes.iter_mut().enumerate() {
            h.push(value_hash(&t.data, r));
        }
        match plan {
            None => {}
            Some(FeaturePlan::Numeric { name, range }) => {
                let f = w.features.entry(name.clone()).or_insert_with(|| FeatureSketch::numeric(*range));
                for (r, flag) in ood.iter_mut().enumerate() {
                    if f.observe_number(number(&t.data, r).unwrap_or(f64::NAN)) {
                        *flag = true;
                    }
                }
            }
            Some(FeaturePlan::Categorical { name, vocabulary, index }) => {
                let f =
                    w.features.entry(name.clone()).or_insert_with(|| FeatureSketch::categorical(vocabulary.clone()));
                for (r, flag) in ood.iter_mut().enumerate() {
                    match &t.data {
                        Data::Str(v) => match v.get(r) {
                            Some(value) => {
                                let code = index.get(value.as_str()).copied();
                                f.observe_code(code);
                                *flag |= code.is_none();
                            }
                            None => f.observe_null(),
                        },
                        _ => f.observe_null(),
                    }
                }
            }
        }
    }
    // The prediction: class (and whether it is near the boundary) or value.
    let mut classes: Vec<Option<usize>> = vec![None; rows];
    let mut boundary = vec![false; rows];
    match &o.plan.prediction {
        PredictionPlan::Classes { output, classes: names } => {
            if let Some(t) = o.outputs.get(*output) {
                let k = names.len();
                let p = w.prediction.get_or_insert_with(|| FeatureSketch::categorical(names.clone()));
                for r in 0..rows {
                    let probs: Vec<f64> = (0..k).filter_map(|j| number(&t.data, r * k + j)).collect();
                    if probs.len() != k {
                        continue;
                    }
                    let (best, top) =
                        probs.iter().enumerate().fold((0, f64::MIN), |a, (j, &x)| if x > a.1 { (j, x) } else { a });
                    classes[r] = Some(best);
                    boundary[r] = top < 1.0 / k as f64 + BOUNDARY_MARGIN;
                    p.observe_code(Some(best));
                }
            }
        }
        PredictionPlan::Value { output } => {
            if let Some(t) = o.outputs.get(*output) {
                let p = w.prediction.get_or_insert_with(|| FeatureSketch::numeric(None));
                for r in 0..rows {
                    p.observe_number(number(&t.data, r).unwrap_or(f64::NAN));
                }
            }
        }
        PredictionPlan::None => {}
    }
    // The principal's counts.
    // Decided against the window's tracks, which outlive its parts: the
    // bound holds for the whole window and a principal keeps one name in it.
    let who = if l.tracks.contains_key(o.principal) || l.tracks.len() < MAX_PRINCIPALS { o.principal } else { OTHERS };
    let pw: &mut PrincipalWindow = w.principals.entry(who.to_string()).or_default();
    let track = l.tracks.entry(who.to_string()).or_default();
    pw.requests += 1;
    pw.rows += rows as u64;
    for r in 0..rows {
        pw.ood_rows += ood[r] as u64;
        pw.boundary_rows += boundary[r] as u64;
        let row = &hashes[r];
        let mut h = hasher();
        row.hash(&mut h);
        let whole = h.finish();
        if track.seen.contains(&whole) {
            pw.repeated_rows += 1;
        } else if track.seen.len() < MAX_SEEN {
            track.seen.insert(whole);
        }
        if let Some((prev, prev_class)) = &track.previous {
            let changed = prev.iter().zip(row).filter(|(a, b)| a != b).count();
            if (1..=2).contains(&changed) {
                pw.near_previous += 1;
                if prev_class.is_some() && classes[r].is_some() && *prev_class != classes[r] {
                    pw.flips_near_previous += 1;
                }
            }
        }
        track.previous = Some((row.clone(), classes[r]));
    }
}
