pub mod image_ref;
pub mod policy;
