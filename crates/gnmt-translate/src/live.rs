//! Continuous batching: a search that sentences join between steps and leave as soon as they
//! are done, for a server whose requests arrive while others are being searched.
//!
//! A batch searched to the end keeps its finished sentences' clients waiting for its longest
//! one, and the requests that came meanwhile waiting for the whole batch. A [`LiveSearch`]
//! hands each sentence back at the step it ends and takes new sentences at the next step, so
//! the decoder's batch stays as full as the load allows. A sentence gets the translation the
//! batch search gives it (its rows do not see the others': the tests compare the two).

use tch::{Device, TchError};

use crate::search::Search;
use crate::{check_vocabularies, Hypothesis, Member, SearchConfig};

/// A sentence's ticket: [`LiveSearch::join`] gives them, [`LiveSearch::step`] returns them
/// with the sentence's hypotheses.
pub type Ticket = usize;

/// A search under way over sentences that join and leave it step by step, with one set of
/// search settings.
pub struct LiveSearch<'a> {
    members: Vec<Member<'a>>,
    cfg: SearchConfig,
    device: Device,
    search: Option<Search<'a>>,
    /// Empty sentences: done before any step (an empty translation).
    ready: Vec<(Ticket, Vec<Hypothesis>)>,
    next: Ticket,
}

impl std::fmt::Debug for LiveSearch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSearch")
            .field("sentences", &self.len())
            .field("pieces", &self.pieces())
            .finish()
    }
}

impl<'a> LiveSearch<'a> {
    /// An empty search with `members` (one model, or an ensemble sharing one vocabulary).
    pub fn new(
        members: Vec<Member<'a>>,
        cfg: SearchConfig,
        device: Device,
    ) -> Result<Self, TchError> {
        check_vocabularies(&members)?;
        Ok(LiveSearch {
            members,
            cfg,
            device,
            search: None,
            ready: Vec::new(),
            next: 0,
        })
    }

    pub fn settings(&self) -> &SearchConfig {
        &self.cfg
    }

    /// Sentences joined and not yet returned by [`LiveSearch::step`].
    pub fn len(&self) -> usize {
        self.ready.len() + self.search.as_ref().map_or(0, |s| s.sentences.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Source pieces of the sentences being searched (a batch's token budget).
    pub fn pieces(&self) -> usize {
        self.search
            .as_ref()
            .map_or(0, |s| s.sentences.iter().map(|x| x.src_len).sum())
    }

    /// `sources` join the search (encoded now, searched from the next step); their tickets,
    /// in order.
    pub fn join(&mut self, sources: &[Vec<u32>]) -> Result<Vec<Ticket>, TchError> {
        let tickets: Vec<Ticket> = (self.next..self.next + sources.len()).collect();
        self.next += sources.len();
        let (mut ids, mut searched) = (Vec::new(), Vec::new());
        for (&t, src) in tickets.iter().zip(sources) {
            if src.is_empty() {
                self.ready.push((t, vec![Hypothesis::empty()]));
            } else {
                ids.push(t);
                searched.push(src.clone());
            }
        }
        if searched.is_empty() {
            return Ok(tickets);
        }
        let (members, cfg, device) = (&self.members, &self.cfg, self.device);
        match &mut self.search {
            Some(s) if !s.sentences.is_empty() => {
                tch::no_grad(|| s.join(&ids, &searched))?;
            }
            _ => {
                let s = tch::no_grad(|| Search::start(members, &ids, &searched, cfg, device))?;
                self.search = Some(s);
            }
        }
        Ok(tickets)
    }

    /// One step of every sentence; the sentences done at it (and the empty ones that joined
    /// since the last step), with their hypotheses best first.
    pub fn step(&mut self) -> Result<Vec<(Ticket, Vec<Hypothesis>)>, TchError> {
        let mut done = std::mem::take(&mut self.ready);
        if let Some(s) = &mut self.search {
            if !s.sentences.is_empty() {
                tch::no_grad(|| s.step())?;
            }
            done.append(&mut s.done);
        }
        Ok(done)
    }
}
