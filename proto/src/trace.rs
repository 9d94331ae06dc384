//! Trace context across processes. A span's context leaves a process in
//! the message it caused ([`Message::trace`](crate::Message::trace)), and
//! a span made for that message in another process takes it as its parent:
//! a push is then one trace from the HTTP request to the delivery.
//!
//! Without a span exporter configured spans have no context: nothing is
//! carried, and these calls cost a lookup.

use herald_core::TraceParent;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The context of `span`, when it is part of a recorded trace.
pub fn context_of(span: &tracing::Span) -> Option<TraceParent> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context.is_valid().then(|| TraceParent {
        trace_id: span_context.trace_id().to_bytes(),
        span_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
    })
}

/// Makes `parent`, a span of another process, the parent of `span`.
pub fn set_parent(span: &tracing::Span, parent: &TraceParent) {
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}
