//! The queue between the HTTP handlers and the search workers, and dynamic batching: a worker
//! takes the oldest request and every queued request with the same search settings, up to a
//! sentence and token budget, waiting at most a few milliseconds for more to arrive.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::api::Settings;

/// What a worker hands back to a request: per sentence, its hypotheses best first.
pub type Reply = Result<Vec<Vec<gnmt_translate::Hypothesis>>, String>;

/// One request's sentences (as source pieces), waiting for a worker.
#[derive(Debug)]
pub struct Job {
    pub sources: Vec<Vec<u32>>,
    pub settings: Settings,
    pub reply: tokio::sync::oneshot::Sender<Reply>,
    pub enqueued: Instant,
}

impl Job {
    fn tokens(&self) -> usize {
        self.sources.iter().map(|s| s.len().max(1)).sum()
    }

    /// The client gave up (disconnected, or its deadline passed): nobody reads the answer.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// How big a batch may grow, and how long the first request in it may wait for company.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLimits {
    pub sentences: usize,
    /// Source pieces of a batch.
    pub tokens: usize,
    pub wait: Duration,
    /// A batch also starts once no request has come for this long (a burst is in).
    pub quiet: Duration,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its limit of sentences already.
    Full,
    /// The server is shutting down.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Sentences in `jobs`.
    sentences: usize,
    /// Workers waiting in `next_batch`: the queued sentences are shared out between them.
    idle: usize,
    /// When the last job came: a batch starts once requests stop arriving for a moment.
    last_push: Option<Instant>,
    /// Batches being searched: with none, an idle server starts a batch at the first quiet
    /// moment (latency); while others search, it waits the window (fuller batches).
    busy: usize,
    /// Sentences in those searches, and the workers: a search under way takes more only up
    /// to its fair share of all the sentences in the server.
    searching: usize,
    workers: usize,
    closed: bool,
}

/// A bounded queue of jobs, counted in sentences.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    limit: usize,
}

impl Queue {
    /// A queue that refuses jobs once it holds `limit` sentences.
    pub fn new(limit: usize) -> Self {
        Queue {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            limit: limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked while holding the lock left the queue consistent (every
        // update is a push or a drain): keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`, or gives it back with the reason. A job larger than the whole limit is
    /// taken when the queue is empty, so that no request is refused forever.
    pub fn push(&self, job: Job) -> Result<(), (Refused, Job)> {
        let mut st = self.lock();
        if st.closed {
            return Err((Refused::Closed, job));
        }
        let n = job.sources.len();
        if st.sentences > 0 && st.sentences + n > self.limit {
            return Err((Refused::Full, job));
        }
        st.sentences += n;
        st.last_push = Some(job.enqueued);
        st.jobs.push_back(job);
        drop(st);
        self.changed.notify_one();
        Ok(())
    }

    /// A worker will take batches (the fair shares count them).
    pub fn add_worker(&self) {
        self.lock().workers += 1;
    }

    /// A batch from [`Queue::next_batch`] is searched and answered.
    pub fn batch_done(&self) {
        let mut st = self.lock();
        st.busy = st.busy.saturating_sub(1);
    }

    /// `n` sentences of a search under way are answered.
    pub fn sentences_done(&self, n: usize) {
        let mut st = self.lock();
        st.searching = st.searching.saturating_sub(n);
    }

    /// Without waiting, queued jobs with `settings` that join a search under way of `active`
    /// sentences and `pieces` source pieces: in queue order, as many as fit the budget and
    /// this search's fair share of every sentence in the server (idle workers get theirs).
    /// None while a job with other settings has waited the window: the search drains, and its
    /// worker turns to that job.
    pub fn join_batch(
        &self,
        settings: &Settings,
        active: usize,
        pieces: usize,
        limits: &BatchLimits,
    ) -> Vec<Job> {
        let mut st = self.lock();
        drop_abandoned(&mut st);
        let Some(head) = st.jobs.front() else {
            return Vec::new();
        };
        if head.settings != *settings && head.enqueued.elapsed() >= limits.wait {
            return Vec::new();
        }
        let waiting: usize = st
            .jobs
            .iter()
            .filter(|j| j.settings == *settings)
            .map(|j| j.sources.len())
            .sum();
        // Each join encodes its sentences as one small batch: a join per arriving request
        // would encode one sentence at a time. Joins wait until a quarter of the search's
        // size has come, or the oldest has waited the window.
        let oldest = st.jobs.iter().find(|j| j.settings == *settings);
        let overdue = oldest.is_some_and(|j| j.enqueued.elapsed() >= limits.wait);
        if waiting == 0 || (4 * waiting < active && !overdue) {
            return Vec::new();
        }
        let fair = (waiting + st.searching).div_ceil(st.workers.max(1));
        let cap = BatchLimits {
            sentences: limits.sentences.min(fair).saturating_sub(active),
            tokens: limits.tokens.saturating_sub(pieces),
            ..*limits
        };
        let order: Vec<usize> = (0..st.jobs.len())
            .filter(|&i| st.jobs[i].settings == *settings)
            .collect();
        let batch = take_fitting(&mut st, order, &cap, (0, 0));
        st.searching += batch.iter().map(|j| j.sources.len()).sum::<usize>();
        batch
    }

    /// Sentences waiting.
    pub fn depth(&self) -> usize {
        self.lock().sentences
    }

    /// Refuses new jobs; the workers still drain what is queued, then [`Queue::next_batch`]
    /// returns None.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The next batch: the oldest job and the queued jobs with its settings that fit the
    /// budget, once the budget is full, the oldest job has waited `limits.wait`, or no job has
    /// come for `limits.quiet`. None once the queue is closed and empty.
    pub fn next_batch(&self, limits: &BatchLimits) -> Option<Vec<Job>> {
        let mut st = self.lock();
        st.idle += 1;
        self.wait_for_batch(st, limits)
    }

    fn wait_for_batch(
        &self,
        mut st: MutexGuard<'_, State>,
        limits: &BatchLimits,
    ) -> Option<Vec<Job>> {
        loop {
            drop_abandoned(&mut st);
            let Some(head) = st.jobs.front() else {
                if st.closed {
                    st.idle -= 1;
                    return None;
                }
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            // Due when the oldest has waited the window; on an idle server (no batch being
            // searched) earlier, once no request has come for `quiet`: a lone request waits
            // only that. Under load, waiting the window makes fuller batches (measured: 16
            // clients 125-152 sentences/s starting early, 172-177 waiting).
            let last = st.last_push.map_or(head.enqueued, |t| t.max(head.enqueued));
            let due = match st.busy {
                0 => (head.enqueued + limits.wait).min(last + limits.quiet),
                _ => head.enqueued + limits.wait,
            };
            let (sentences, tokens) = st
                .jobs
                .iter()
                .filter(|j| j.settings == head.settings)
                .fold((0, 0), |(n, t), j| (n + j.sources.len(), t + j.tokens()));
            let now = Instant::now();
            if st.closed || now >= due || sentences >= limits.sentences || tokens >= limits.tokens {
                // Idle workers share what waits (fewer, fuller batches would leave cores idle):
                // this one takes its part and wakes the next for the rest.
                let share = sentences.div_ceil(st.idle.max(1));
                let cap = BatchLimits {
                    sentences: limits.sentences.min(share.max(1)),
                    ..*limits
                };
                st.idle -= 1;
                st.busy += 1;
                let batch = take_batch(&mut st, &cap);
                st.searching += batch.iter().map(|j| j.sources.len()).sum::<usize>();
                if !st.jobs.is_empty() {
                    self.changed.notify_one();
                }
                return Some(batch);
            }
            st = self
                .changed
                .wait_timeout(st, due - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn drop_abandoned(st: &mut State) {
    let before = st.jobs.len();
    st.jobs.retain(|j| !j.abandoned());
    if st.jobs.len() != before {
        st.sentences = st.jobs.iter().map(|j| j.sources.len()).sum();
    }
}

/// Takes the head job and, closest in sentence length first, each later job with its settings
/// that still fits; the rest keep their order.
fn take_batch(st: &mut State, limits: &BatchLimits) -> Vec<Job> {
    let Some(head) = st.jobs.pop_front() else {
        return Vec::new();
    };
    let settings = head.settings;
    let width = |j: &Job| j.tokens() as f64 / j.sources.len().max(1) as f64;
    let head_width = width(&head);
    let used = (head.sources.len(), head.tokens());
    // The compatible jobs closest in sentence length to the head first: a batch of similar
    // lengths pads less and its short sentences do not wait for a long one (measured against
    // queue order, 3 alternating rounds: 64 clients 182-255 against 171-233 sentences/s, 16
    // clients even within the noise).
    let mut order: Vec<usize> = (0..st.jobs.len())
        .filter(|&i| st.jobs[i].settings == settings)
        .collect();
    order.sort_by(|&a, &b| {
        let d = |i: usize| (width(&st.jobs[i]) - head_width).abs();
        d(a).total_cmp(&d(b))
    });
    let mut batch = vec![head];
    batch.extend(take_fitting(st, order, limits, used));
    batch
}

/// Visiting the queued jobs at `order` (indices) in that order, takes each that still fits
/// `cap` on top of `used` (sentences, source pieces); they leave the queue in queue order.
fn take_fitting(
    st: &mut State,
    order: Vec<usize>,
    cap: &BatchLimits,
    used: (usize, usize),
) -> Vec<Job> {
    let (mut n, mut t) = used;
    let mut take = vec![false; st.jobs.len()];
    for i in order {
        let j = &st.jobs[i];
        if n + j.sources.len() <= cap.sentences && t + j.tokens() <= cap.tokens {
            n += j.sources.len();
            t += j.tokens();
            take[i] = true;
        }
    }
    let mut batch = Vec::new();
    let mut rest = VecDeque::with_capacity(st.jobs.len());
    for (j, taken) in std::mem::take(&mut st.jobs).into_iter().zip(take) {
        if taken {
            batch.push(j);
        } else {
            rest.push_back(j);
        }
    }
    st.jobs = rest;
    st.sentences = st.jobs.iter().map(|j| j.sources.len()).sum();
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        beam: 5,
        alpha: 0.6,
        beta: 0.1,
        nbest: 1,
    };

    fn job(n: usize, settings: Settings) -> (Job, tokio::sync::oneshot::Receiver<Reply>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let j = Job {
            sources: vec![vec![1, 2, 3]; n],
            settings,
            reply: tx,
            enqueued: Instant::now(),
        };
        (j, rx)
    }

    const LIMITS: BatchLimits = BatchLimits {
        sentences: 8,
        tokens: 1000,
        wait: Duration::from_millis(20),
        quiet: Duration::from_millis(4),
    };

    #[test]
    fn requests_with_the_same_settings_share_a_batch_others_wait_their_turn() {
        let q = Queue::new(100);
        let other = Settings { beam: 2, ..S };
        let mut keep = Vec::new();
        for (n, s) in [(3, S), (2, other), (4, S), (2, S)] {
            let (j, rx) = job(n, s);
            keep.push(rx);
            q.push(j).unwrap();
        }
        assert_eq!(q.depth(), 11);
        // 3 + 4 fit in 8 sentences, the next 2 would not; the beam-2 job stays queued.
        let b = q.next_batch(&LIMITS).unwrap();
        assert_eq!(
            b.iter().map(|j| j.sources.len()).collect::<Vec<_>>(),
            [3, 4]
        );
        let b = q.next_batch(&LIMITS).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].settings, other);
        let b = q.next_batch(&LIMITS).unwrap();
        assert_eq!(b[0].sources.len(), 2);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn a_full_queue_refuses_and_a_closed_one_drains_then_ends() {
        let q = Queue::new(5);
        let (a, _ra) = job(4, S);
        q.push(a).unwrap();
        let (b, _rb) = job(2, S);
        assert_eq!(q.push(b).unwrap_err().0, Refused::Full);
        q.close();
        let (c, _rc) = job(1, S);
        assert_eq!(q.push(c).unwrap_err().0, Refused::Closed);
        assert_eq!(q.next_batch(&LIMITS).unwrap().len(), 1);
        assert!(q.next_batch(&LIMITS).is_none());
        // One request larger than the whole limit is still taken when nothing waits.
        let q = Queue::new(2);
        let (big, _r) = job(3, S);
        q.push(big).unwrap();
    }

    #[test]
    fn a_lone_request_waits_the_quiet_time_and_abandoned_ones_are_skipped() {
        let q = Queue::new(100);
        let (gone, rx) = job(1, S);
        q.push(gone).unwrap();
        drop(rx);
        let (j, _rx) = job(1, S);
        q.push(j).unwrap();
        let t = Instant::now();
        let b = q.next_batch(&LIMITS).unwrap();
        assert_eq!(b.len(), 1);
        assert!(!b[0].abandoned());
        // Nothing else came for 4 ms: it starts then (not at once, nor after the window).
        assert!(t.elapsed() >= Duration::from_millis(3), "{:?}", t.elapsed());
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn a_batch_gathers_sentences_of_the_head_s_length_first() {
        let q = Queue::new(100);
        let mut keep = Vec::new();
        for len in [4usize, 20, 5, 19, 3] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            keep.push(rx);
            let j = Job {
                sources: vec![vec![7; len]],
                settings: S,
                reply: tx,
                enqueued: Instant::now(),
            };
            q.push(j).unwrap();
        }
        let limits = BatchLimits {
            sentences: 3,
            ..LIMITS
        };
        let lens = |b: Vec<Job>| b.iter().map(|j| j.sources[0].len()).collect::<Vec<_>>();
        assert_eq!(lens(q.next_batch(&limits).unwrap()), [4, 5, 3]);
        assert_eq!(lens(q.next_batch(&limits).unwrap()), [20, 19]);
    }

    #[test]
    fn idle_workers_share_what_waits() {
        let q = std::sync::Arc::new(Queue::new(100));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || q.next_batch(&LIMITS).map(|b| b.len()))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut keep = Vec::new();
        for _ in 0..8 {
            let (j, rx) = job(1, S);
            keep.push(rx);
            q.push(j).unwrap();
        }
        // Let both finish before closing (a worker left waiting then returns None).
        std::thread::sleep(Duration::from_millis(200));
        q.close();
        let sizes: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(sizes, [Some(4), Some(4)]);
    }

    #[test]
    fn a_search_under_way_takes_its_fair_share_of_what_waits_with_its_settings() {
        let q = Queue::new(100);
        q.add_worker();
        q.add_worker();
        let other = Settings { beam: 2, ..S };
        let mut keep = Vec::new();
        for (n, s) in [(2, S), (1, other), (3, S), (2, S), (1, S)] {
            let (j, rx) = job(n, s);
            keep.push(rx);
            q.push(j).unwrap();
        }
        // A first worker's batch: 8 sentences at most, the head's settings.
        let first = q.next_batch(&LIMITS).unwrap();
        assert_eq!(first.iter().map(|j| j.sources.len()).sum::<usize>(), 8);
        // Six of them done: two active. Five more come: half of the seven in the server is
        // four, so the search takes the first job (two), and the other settings' job waits.
        q.sentences_done(6);
        for (n, s) in [(2, S), (3, S)] {
            let (j, rx) = job(n, s);
            keep.push(rx);
            q.push(j).unwrap();
        }
        let joined = q.join_batch(&S, 2, 6, &LIMITS);
        assert_eq!(
            joined.iter().map(|j| j.sources.len()).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(q.depth(), 4);
        // Full at its share: nothing more.
        assert!(q.join_batch(&S, 4, 12, &LIMITS).is_empty());
        // Once that job has waited the window, the search takes nothing more and drains.
        let (j, rx) = job(1, S);
        keep.push(rx);
        q.push(j).unwrap();
        std::thread::sleep(LIMITS.wait);
        assert!(q.join_batch(&S, 0, 0, &LIMITS).is_empty());
        assert_eq!(q.next_batch(&LIMITS).unwrap()[0].settings, other);
    }

    #[test]
    fn a_search_under_way_keeps_to_the_token_budget() {
        let q = Queue::new(100);
        q.add_worker();
        let mut keep = Vec::new();
        for _ in 0..3 {
            let (j, rx) = job(1, S);
            keep.push(rx);
            q.push(j).unwrap();
        }
        // Three pieces a sentence: a search holding 995 of 1000 takes one more sentence.
        assert_eq!(q.join_batch(&S, 1, 995, &LIMITS).len(), 1);
        assert_eq!(q.depth(), 2);
    }

    #[test]
    fn a_waiting_worker_wakes_for_a_full_batch() {
        let q = std::sync::Arc::new(Queue::new(100));
        let limits = BatchLimits {
            wait: Duration::from_secs(60),
            ..LIMITS
        };
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || q.next_batch(&limits).map(|b| b.len()))
        };
        let mut keep = Vec::new();
        for _ in 0..4 {
            let (j, rx) = job(2, S);
            keep.push(rx);
            q.push(j).unwrap();
        }
        assert_eq!(worker.join().unwrap(), Some(4));
    }
}
