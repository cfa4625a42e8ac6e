//! An answerer the test controls (through `ragd::Hooks`): it can hold every
//! generation back until the test releases it, fail with a given text, and
//! counts its calls so a test can wait for a generation to have started.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ragd::rag::{Answer, AnswerError, AnswerFuture, AnswerRequest, Answerer, Source};
use tokio::sync::{Semaphore, watch};

#[derive(Clone)]
pub struct TestAnswerer(Arc<Inner>);

struct Inner {
    gated: AtomicBool,
    gate: Semaphore,
    failure: Mutex<Option<String>>,
    sources: Mutex<Vec<Source>>,
    calls: AtomicUsize,
    started: watch::Sender<usize>,
}

impl TestAnswerer {
    /// Answers at once with `Answer #<n> to: <question>`.
    pub fn instant() -> TestAnswerer {
        TestAnswerer(Arc::new(Inner {
            gated: AtomicBool::new(false),
            gate: Semaphore::new(0),
            failure: Mutex::new(None),
            sources: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            started: watch::channel(0).0,
        }))
    }

    /// Holds every generation until [`TestAnswerer::release`].
    pub fn gated() -> TestAnswerer {
        let answerer = Self::instant();
        answerer.0.gated.store(true, Ordering::SeqCst);
        answerer
    }

    /// Fails every generation with this text (after the gate, if any).
    pub fn failing(text: &str) -> TestAnswerer {
        let answerer = Self::instant();
        answerer.fail_with(Some(text));
        answerer
    }

    /// Lets `n` held generations (present or future) finish.
    pub fn release(&self, n: usize) {
        self.0.gate.add_permits(n);
    }

    pub fn fail_with(&self, text: Option<&str>) {
        *self.0.failure.lock().unwrap() = text.map(str::to_owned);
    }

    pub fn set_sources(&self, sources: Vec<Source>) {
        *self.0.sources.lock().unwrap() = sources;
    }

    /// Generations started so far.
    pub fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` generations have started.
    pub async fn wait_for_calls(&self, n: usize) {
        let mut started = self.0.started.subscribe();
        tokio::time::timeout(Duration::from_secs(5), started.wait_for(|&c| c >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the answerer was not called {n} times within 5s (calls: {})",
                    self.calls()
                )
            })
            .expect("the answerer is alive");
    }

    /// The hooks that install this answerer.
    pub fn hooks(&self) -> ragd::Hooks {
        ragd::Hooks {
            answerer: Some(Arc::new(self.clone()) as Arc<dyn Answerer>),
            ..Default::default()
        }
    }

    /// The content the `n`-th generation answers to `question`.
    pub fn content(n: usize, question: &str) -> String {
        format!("Answer #{n} to: {question}")
    }
}

impl Answerer for TestAnswerer {
    fn answer(&self, request: AnswerRequest) -> AnswerFuture {
        let inner = Arc::clone(&self.0);
        Box::pin(async move {
            let n = inner.calls.fetch_add(1, Ordering::SeqCst) + 1;
            inner.started.send_replace(n);
            if inner.gated.load(Ordering::SeqCst) {
                inner
                    .gate
                    .acquire()
                    .await
                    .expect("the gate is never closed")
                    .forget();
            }
            let failure = inner.failure.lock().unwrap().clone();
            if let Some(text) = failure {
                return Err(AnswerError(text));
            }
            let sources = inner.sources.lock().unwrap().clone();
            Ok(Answer {
                content: TestAnswerer::content(n, &request.question),
                sources,
            })
        })
    }
}
