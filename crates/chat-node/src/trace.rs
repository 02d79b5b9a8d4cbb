//! OpenTelemetry spans along one chat message's path, one trace across nodes:
//!
//! ```text
//! chat.send      (node A, server)    the `send` frame, until its ack or error is queued
//! └ kafka.produce (node A, producer)  until the log acknowledged the record
//!   └ chat.deliver (every node with members in the room, consumer)  fanned out to sockets
//! ```
//!
//! The produce span's context rides in the record's W3C `traceparent` header, so each node's
//! `chat.deliver` joins the sender's trace. Everything here is a no-op (one atomic load) until
//! the binary has installed a tracer provider and called [`enable`].

use std::sync::OnceLock;

use onlychat_bus::Headers;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

struct Tracing {
    tracer: BoxedTracer,
    node: String,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Starts recording spans through the global tracer provider and text-map propagator, which
/// the caller has installed. `node` is written on every span as `onlychat.node`.
pub fn enable(node: &str) {
    TRACING.get_or_init(|| Tracing {
        tracer: global::tracer("onlychat"),
        node: node.to_owned(),
    });
}

/// The spans of one `send` on the node that took it.
pub(crate) struct SendSpans {
    send: Context,
    produce: Context,
}

impl SendSpans {
    /// Opens `chat.send` and its child `kafka.produce`; `None` when tracing is off.
    pub(crate) fn start(room: &str, user: &str, client_id: &str) -> Option<Self> {
        let tracing = TRACING.get()?;
        let attributes = vec![
            KeyValue::new("onlychat.node", tracing.node.clone()),
            KeyValue::new("onlychat.room", room.to_owned()),
            KeyValue::new("onlychat.user", user.to_owned()),
            KeyValue::new("onlychat.client_id", client_id.to_owned()),
        ];
        let send = tracing
            .tracer
            .span_builder("chat.send")
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start(&tracing.tracer);
        let send = Context::current_with_span(send);
        let produce = tracing
            .tracer
            .span_builder("kafka.produce")
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("onlychat.node", tracing.node.clone()),
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.destination.name", room.to_owned()),
            ])
            .start_with_context(&tracing.tracer, &send);
        let produce = send.with_span(produce);
        Some(Self { send, produce })
    }

    /// The record headers that carry the produce span's context.
    pub(crate) fn headers(&self) -> Headers {
        let mut headers = HeaderInjector(Headers::new());
        global::get_text_map_propagator(|p| p.inject_context(&self.produce, &mut headers));
        headers.0
    }

    /// Ends both spans: acknowledged at `position`, or failed with `error`.
    pub(crate) fn end(self, outcome: Result<u64, &dyn std::fmt::Display>) {
        let produce = self.produce.span();
        match outcome {
            Ok(position) => {
                produce.set_attribute(KeyValue::new("onlychat.position", position as i64));
            }
            Err(error) => {
                let status = Status::error(error.to_string());
                produce.set_status(status.clone());
                self.send.span().set_status(status);
            }
        }
        produce.end();
        self.send.span().end();
    }
}

/// Opens `chat.deliver` for a record read from the log, as a child of the context in its
/// headers (or a root span if it has none); `None` when tracing is off (then `wanted` is not
/// even asked, keeping the fan-out path as it was) or when `wanted` says there is nothing here.
pub(crate) fn start_deliver(
    headers: &Headers,
    room: &str,
    wanted: impl FnOnce() -> bool,
) -> Option<Context> {
    let tracing = TRACING.get().filter(|_| wanted())?;
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let span = tracing
        .tracer
        .span_builder("chat.deliver")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("onlychat.node", tracing.node.clone()),
            KeyValue::new("onlychat.room", room.to_owned()),
        ])
        .start_with_context(&tracing.tracer, &parent);
    Some(parent.with_span(span))
}

/// Ends a `chat.deliver` span with how many sockets the message was queued to.
pub(crate) fn end_deliver(span: Option<Context>, sockets: usize) {
    if let Some(cx) = span {
        let span = cx.span();
        span.set_attribute(KeyValue::new("onlychat.sockets", sockets as i64));
        span.end();
    }
}

struct HeaderInjector(Headers);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct HeaderExtractor<'a>(&'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}
