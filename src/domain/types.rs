//! The İYS vocabulary: channels, recipient types, statuses and sources, spelled as İYS spells
//! them so the code can be read against the İYS documentation. These are the only Rust types
//! for these words: the İYS JSON bodies (`crate::iys::wire`), the mock, the sync worker and
//! the command line all use them (serde and clap spell them as İYS does); only the generated
//! protobuf enums differ, mapped in `crate::pb::convert`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// İYS `type`: the channel a message is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Channel {
    Arama,
    Mesaj,
    Eposta,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Arama, Channel::Mesaj, Channel::Eposta];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Arama => "ARAMA",
            Channel::Mesaj => "MESAJ",
            Channel::Eposta => "EPOSTA",
        }
    }

    /// The channel İYS spells `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// `ARAMA` and `MESAJ` take a phone number, `EPOSTA` an e-mail address.
    pub fn wants_phone(self) -> bool {
        self.address_kind() == AddressKind::Phone
    }

    /// The kind of address this channel is sent to: ARAMA and MESAJ need a phone number,
    /// EPOSTA an e-mail address.
    pub fn address_kind(self) -> AddressKind {
        match self {
            Channel::Arama | Channel::Mesaj => AddressKind::Phone,
            Channel::Eposta => AddressKind::Email,
        }
    }
}

/// Whether an address is a phone number or an e-mail address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    Phone,
    Email,
}

/// İYS `recipientType`. BIREYSEL and TACIR records of one address are independent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecipientType {
    /// An individual; İYS's default when the field is omitted.
    #[default]
    Bireysel,
    /// A merchant or tradesman (opt-out reading of the law for a first record).
    Tacir,
}

impl RecipientType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientType::Bireysel => "BIREYSEL",
            RecipientType::Tacir => "TACIR",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "BIREYSEL" => Some(Self::Bireysel),
            "TACIR" => Some(Self::Tacir),
            _ => None,
        }
    }
}

/// İYS `status`. Only `ONAY` and `RET` exist (`RED` is a common client bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConsentStatus {
    Onay,
    Ret,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Onay => "ONAY",
            ConsentStatus::Ret => "RET",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ONAY" => Some(Self::Onay),
            "RET" => Some(Self::Ret),
            _ => None,
        }
    }
}

macro_rules! sources {
    ($($(#[$attr:meta])* $variant:ident = $code:literal => $text:literal,)*) => {
        /// İYS `source`: where a consent event came from. `HS_*` are sent by the service
        /// provider (the brand), `IYS_*` are set by İYS for changes a recipient made there.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Source {
            $($(#[$attr])* $variant = $code,)*
        }

        impl Source {
            pub const ALL: &'static [Source] = &[$(Source::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Source::$variant => $text,)*
                }
            }

            /// The compact code stored in the index (fits in 5 bits).
            pub fn code(self) -> u8 {
                self as u8
            }

            pub fn from_code(code: u8) -> Option<Source> {
                match code {
                    $($code => Some(Source::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

sources! {
    HsFizikselOrtam = 1 => "HS_FIZIKSEL_ORTAM",
    HsIslakImza = 2 => "HS_ISLAK_IMZA",
    HsWeb = 3 => "HS_WEB",
    HsCagriMerkezi = 4 => "HS_CAGRI_MERKEZI",
    HsSosyalMedya = 5 => "HS_SOSYAL_MEDYA",
    HsEposta = 6 => "HS_EPOSTA",
    HsMesaj = 7 => "HS_MESAJ",
    HsMobil = 8 => "HS_MOBIL",
    HsEortam = 9 => "HS_EORTAM",
    HsEtkinlik = 10 => "HS_ETKINLIK",
    Hs2015 = 11 => "HS_2015",
    HsAtm = 12 => "HS_ATM",
    HsKarar = 13 => "HS_KARAR",
    IysKisamesaj = 16 => "IYS_KISAMESAJ",
    IysCm = 17 => "IYS_CM",
    IysWeb = 18 => "IYS_WEB",
    IysWebYeni = 19 => "IYS_WEB_YENI",
    IysMobil = 20 => "IYS_MOBIL",
    IysEposta = 21 => "IYS_EPOSTA",
    IysAhsHatKapatma = 22 => "IYS_AHS_HAT_KAPATMA",
    IysFrameEposta = 23 => "IYS_FRAME_EPOSTA",
    IysFrameSms = 24 => "IYS_FRAME_SMS",
    Iys3338 = 25 => "IYS_3338",
    IysKisaLink = 26 => "IYS_KISA_LINK",
    /// Any other `IYS_*` source İYS may introduce: still a recipient-side change.
    IysOther = 31 => "IYS_OTHER",
}

impl Source {
    /// True for sources the service provider sends (HS_*), false for İYS-side ones.
    pub fn is_provider(self) -> bool {
        (self as u8) < 16
    }

    /// The provider (`HS_*`) source İYS spells `text`: the only sources a brand may send
    /// (İYS's H119 lists exactly these).
    pub fn provider(text: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|s| s.is_provider() && s.as_str() == text)
    }
}

/// A value that is not one of İYS's words for this field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} {value:?}")]
pub struct UnknownWord {
    pub field: &'static str,
    pub value: String,
}

impl FromStr for Source {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(found) = Source::ALL.iter().find(|src| src.as_str() == s) {
            return Ok(*found);
        }
        // İYS may add recipient-side sources; the worker must accept any IYS_* (API-NOTES §4).
        if s.starts_with("IYS_") {
            return Ok(Source::IysOther);
        }
        Err(UnknownWord {
            field: "source",
            value: s.to_owned(),
        })
    }
}

impl FromStr for Channel {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownWord {
                field: "type",
                value: s.to_owned(),
            })
    }
}

impl FromStr for RecipientType {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "BIREYSEL" => Ok(RecipientType::Bireysel),
            "TACIR" => Ok(RecipientType::Tacir),
            _ => Err(UnknownWord {
                field: "recipientType",
                value: s.to_owned(),
            }),
        }
    }
}

impl FromStr for ConsentStatus {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ONAY" => Ok(ConsentStatus::Onay),
            "RET" => Ok(ConsentStatus::Ret),
            _ => Err(UnknownWord {
                field: "status",
                value: s.to_owned(),
            }),
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Channel, RecipientType, ConsentStatus, Source);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), *s);
            assert_eq!(Source::from_code(s.code()), Some(*s));
            assert!(s.code() < 32, "source codes must fit in 5 bits");
        }
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), c);
        }
        assert_eq!(
            "IYS_SOMETHING_NEW".parse::<Source>().unwrap(),
            Source::IysOther
        );
        assert!("HS_UNKNOWN".parse::<Source>().is_err());
        assert!(
            "RED".parse::<ConsentStatus>().is_err(),
            "GO client's RED is not İYS's RET"
        );
    }

    #[test]
    fn provider_sources_are_hs() {
        for s in Source::ALL {
            assert_eq!(s.is_provider(), s.as_str().starts_with("HS_"), "{s}");
        }
    }
}
