//! Colormaps: perceptual sequential maps for non-negative layers, diverging maps
//! (centred on zero) for signed layers, a flag colour for NaN and ±Inf. Colours
//! come from the `colorous` crate, sampled once into 256-entry tables.

use std::sync::OnceLock;

/// The colour of NaN and ±Inf values: magenta, absent from every map offered here.
pub const FLAG: [u8; 3] = [255, 0, 255];
/// The colour of separators between grid cells and of unused cells.
pub const SEPARATOR: [u8; 3] = [214, 214, 218];

/// Entries in a colour table.
pub const LUT_SIZE: usize = 256;

/// A colormap. [`Colormap::Auto`] picks [`Colormap::Viridis`] when every shown value
/// is non-negative and [`Colormap::RdBu`] (blue < 0 < red, white at 0) otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Colormap {
    /// Viridis for non-negative values, RdBu for signed ones.
    #[default]
    Auto,
    /// Perceptual, dark purple → yellow.
    Viridis,
    /// Perceptual, black → light yellow through purple and orange.
    Magma,
    /// Perceptual, black → yellow through purple and red.
    Inferno,
    /// Perceptual, blue → yellow through magenta.
    Plasma,
    /// Perceptual and colour-blind friendly, blue → yellow.
    Cividis,
    /// Black → white.
    Greys,
    /// Diverging: blue (negative) → white (zero) → red (positive).
    RdBu,
    /// Diverging: purple (negative) → white → orange (positive).
    PuOr,
}

const ALL: [Colormap; 9] = [
    Colormap::Auto,
    Colormap::Viridis,
    Colormap::Magma,
    Colormap::Inferno,
    Colormap::Plasma,
    Colormap::Cividis,
    Colormap::Greys,
    Colormap::RdBu,
    Colormap::PuOr,
];

impl Colormap {
    /// Every colormap, `Auto` first.
    pub fn all() -> &'static [Colormap] {
        &ALL
    }

    /// The name used on the command line and in captions (`viridis`, `rdbu`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Auto => "auto",
            Colormap::Viridis => "viridis",
            Colormap::Magma => "magma",
            Colormap::Inferno => "inferno",
            Colormap::Plasma => "plasma",
            Colormap::Cividis => "cividis",
            Colormap::Greys => "greys",
            Colormap::RdBu => "rdbu",
            Colormap::PuOr => "puor",
        }
    }

    /// True for maps centred on zero (negative and positive values get different hues).
    pub fn is_diverging(self) -> bool {
        matches!(self, Colormap::RdBu | Colormap::PuOr)
    }

    /// The concrete map used for data that is `signed` (has a negative value) or not.
    pub fn resolve(self, signed: bool) -> Colormap {
        match self {
            Colormap::Auto if signed => Colormap::RdBu,
            Colormap::Auto => Colormap::Viridis,
            other => other,
        }
    }

    /// The colour at `t` in [0, 1] (clamped; NaN gives [`FLAG`]). `Auto` reads as viridis.
    pub fn color(self, t: f32) -> [u8; 3] {
        if t.is_nan() {
            return FLAG;
        }
        self.lut()[lut_index(t)]
    }

    /// The map sampled at `LUT_SIZE` evenly spaced points, 0 and 1 included.
    pub fn lut(self) -> &'static [[u8; 3]; LUT_SIZE] {
        static LUTS: [OnceLock<[[u8; 3]; LUT_SIZE]>; ALL.len()] =
            [const { OnceLock::new() }; ALL.len()];
        let i = ALL.iter().position(|&c| c == self).unwrap_or(0);
        LUTS[i].get_or_init(|| {
            let mut lut = [[0u8; 3]; LUT_SIZE];
            for (k, e) in lut.iter_mut().enumerate() {
                *e = self.eval(k as f64 / (LUT_SIZE - 1) as f64);
            }
            lut
        })
    }

    fn eval(self, t: f64) -> [u8; 3] {
        let c = match self {
            Colormap::Auto | Colormap::Viridis => colorous::VIRIDIS.eval_continuous(t),
            Colormap::Magma => colorous::MAGMA.eval_continuous(t),
            Colormap::Inferno => colorous::INFERNO.eval_continuous(t),
            Colormap::Plasma => colorous::PLASMA.eval_continuous(t),
            Colormap::Cividis => colorous::CIVIDIS.eval_continuous(t),
            // colorous' greys and diverging maps run the other way round.
            Colormap::Greys => colorous::GREYS.eval_continuous(1.0 - t),
            Colormap::RdBu => colorous::RED_BLUE.eval_continuous(1.0 - t),
            Colormap::PuOr => colorous::PURPLE_ORANGE.eval_continuous(1.0 - t),
        };
        [c.r, c.g, c.b]
    }
}

/// The table index of `t` in [0, 1] (clamped; must not be NaN).
#[inline]
pub(crate) fn lut_index(t: f32) -> usize {
    (t.clamp(0.0, 1.0) * (LUT_SIZE - 1) as f32 + 0.5) as usize
}

impl std::fmt::Display for Colormap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Colormap {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Colormap> {
        let lower = s.to_ascii_lowercase();
        ALL.iter()
            .copied()
            .find(|c| c.name() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
                crate::Error::option(format!(
                    "unknown colormap {s:?} (known: {})",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luma(c: [u8; 3]) -> f32 {
        0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32
    }

    #[test]
    fn sequential_maps_get_brighter() {
        for cm in [Colormap::Viridis, Colormap::Magma, Colormap::Greys] {
            let l: Vec<f32> = (0..=10).map(|i| luma(cm.color(i as f32 / 10.0))).collect();
            assert!(l.windows(2).all(|w| w[1] > w[0]), "{cm}: {l:?}");
        }
    }

    #[test]
    fn diverging_maps_are_light_at_zero_and_blue_below() {
        let mid = Colormap::RdBu.color(0.5);
        assert!(mid.iter().all(|&c| c > 230), "{mid:?}");
        let lo = Colormap::RdBu.color(0.0);
        let hi = Colormap::RdBu.color(1.0);
        assert!(lo[2] > lo[0] && hi[0] > hi[2], "{lo:?} {hi:?}");
    }

    #[test]
    fn flag_is_not_in_any_map() {
        for &cm in Colormap::all() {
            assert!(!cm.lut().contains(&FLAG), "{cm}");
            assert_eq!(cm.color(f32::NAN), FLAG);
        }
    }

    #[test]
    fn names_round_trip() {
        for &cm in Colormap::all() {
            assert_eq!(cm.name().parse::<Colormap>().unwrap(), cm);
        }
        assert!("nope".parse::<Colormap>().is_err());
    }
}
