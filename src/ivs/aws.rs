//! placeholder until the ivs helper lands
