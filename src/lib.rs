pub mod smoke {}
