//! NIR's XML documents as this adapter writes and reads them (our own
//! types; the mock keeps its own).

use serde::{Deserialize, Serialize};

pub const NAMESPACE: &str = "urn:no:imdi:nir:ws4:v1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename = "Deltakelse", rename_all = "PascalCase")]
pub struct Deltakelse {
    #[serde(rename = "@xmlns", default, skip_serializing_if = "String::is_empty")]
    pub xmlns: String,
    #[serde(default, skip_serializing)]
    pub deltakelse_id: Option<u64>,
    pub person: Person,
    pub kommunenummer: String,
    pub vedtak: Vedtak,
    pub periode: Periode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hurtigspor: Option<Hurtigspor>,
    #[serde(default, skip_serializing)]
    pub tiltaksliste: Option<Tiltaksliste>,
    #[serde(default, skip_serializing)]
    pub permisjoner: Option<Permisjoner>,
    #[serde(default, skip_serializing)]
    pub avslutning: Option<Avslutning>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Person {
    pub fodselsnummer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Vedtak {
    pub vedtaksdato: String,
    pub utfall: String,
    pub lovgrunnlag: String,
    pub kategori: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Periode {
    pub startdato: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planlagt_sluttdato: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename = "Hurtigspor", rename_all = "PascalCase")]
pub struct Hurtigspor {
    #[serde(rename = "@xmlns", default, skip_serializing_if = "String::is_empty")]
    pub xmlns: String,
    pub markert: bool,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fra: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename = "Tiltaksliste")]
pub struct Tiltaksliste {
    #[serde(rename = "@xmlns", default, skip_serializing_if = "String::is_empty")]
    pub xmlns: String,
    #[serde(rename = "Tiltak", default)]
    pub tiltak: Vec<Tiltak>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Tiltak {
    #[serde(rename = "Type")]
    pub kind: String,
    pub fra: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub til: Option<String>,
    #[serde(default)]
    pub hurtigspor: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename = "Permisjoner")]
pub struct Permisjoner {
    #[serde(rename = "@xmlns", default, skip_serializing_if = "String::is_empty")]
    pub xmlns: String,
    #[serde(rename = "Permisjon", default)]
    pub permisjon: Vec<Permisjon>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Permisjon {
    pub vedtaksdato: String,
    pub fra: String,
    pub til: String,
    pub arsak: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename = "Avslutning", rename_all = "PascalCase")]
pub struct Avslutning {
    #[serde(rename = "@xmlns", default, skip_serializing_if = "String::is_empty")]
    pub xmlns: String,
    pub sluttdato: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avslutningsarsak: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hovedaktivitet_etter_avslutning: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename = "Sok", rename_all = "PascalCase")]
pub struct Sok {
    #[serde(rename = "@xmlns")]
    pub xmlns: String,
    pub fodselsnummer: String,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(rename = "Deltakelser")]
pub struct Deltakelser {
    #[serde(rename = "Deltakelse", default)]
    pub deltakelse: Vec<Deltakelse>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename = "Feil", rename_all = "PascalCase")]
pub struct Feil {
    pub kode: String,
    pub melding: String,
    #[serde(default)]
    pub felt: Option<String>,
}

pub fn to_xml<T: Serialize>(doc: &T) -> String {
    let body = quick_xml::se::to_string(doc).expect("documents serialise");
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}")
}

pub fn from_xml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    quick_xml::de::from_str(text).map_err(|e| e.to_string())
}
