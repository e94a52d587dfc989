//! postbus domain types shared by the store, the engine, the server and the clients.
//!
//! Nothing here does I/O: destinations and their name rules, message ids, the JMS header
//! fields, typed application properties, and the per-destination settings.

pub mod destination;
pub mod message;
pub mod properties;
pub mod settings;

pub use destination::{Destination, DestinationError, DestinationKind};
pub use message::{DeliveryMode, MessageId, NewMessage, StoredMessage};
pub use properties::{Properties, PropertyError, PropertyType, PropertyValue};
pub use settings::QueueSettings;

/// Milliseconds since the Unix epoch, the unit of every timestamp postbus stores.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
