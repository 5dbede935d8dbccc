//! Job receipts (placeholder; filled in next).
