"""The Azure public cloud's physical regions, as `GET /subscriptions/{id}/locations` lists
them (what `az account list-locations` and `SubscriptionClient.subscriptions.list_locations`
read), and ARM's refusal of a location outside that list.

Shape: https://learn.microsoft.com/rest/api/resources/subscriptions/list-locations
(Location, LocationMetadata, PairedRegion); names, coordinates and pairs as the public cloud
lists them."""

from __future__ import annotations

from typing import Any

from emulator.http import HttpError

# name, displayName, geographyGroup, geography, physicalLocation, latitude, longitude,
# paired region ("" for none), regionCategory
_REGIONS = (
    ("eastus", "East US", "US", "United States", "Virginia", "37.3719", "-79.8164", "westus", "R"),
    ("eastus2", "East US 2", "US", "United States", "Virginia", "36.6681", "-78.3889",
     "centralus", "R"),
    ("southcentralus", "South Central US", "US", "United States", "Texas", "29.4167", "-98.5",
     "northcentralus", "R"),
    ("westus2", "West US 2", "US", "United States", "Washington", "47.233", "-119.852",
     "westcentralus", "R"),
    ("westus3", "West US 3", "US", "United States", "Phoenix", "33.448376", "-112.074036",
     "eastus", "R"),
    ("australiaeast", "Australia East", "Asia Pacific", "Australia", "New South Wales",
     "-33.86", "151.2094", "australiasoutheast", "R"),
    ("southeastasia", "Southeast Asia", "Asia Pacific", "Asia Pacific", "Singapore", "1.283",
     "103.833", "eastasia", "R"),
    ("northeurope", "North Europe", "Europe", "Europe", "Ireland", "53.3478", "-6.2597",
     "westeurope", "R"),
    ("swedencentral", "Sweden Central", "Europe", "Sweden", "Gävle", "60.67488", "17.14127",
     "swedensouth", "R"),
    ("uksouth", "UK South", "Europe", "United Kingdom", "London", "50.941", "-0.799", "ukwest",
     "R"),
    ("westeurope", "West Europe", "Europe", "Europe", "Netherlands", "52.3667", "4.9",
     "northeurope", "R"),
    ("centralus", "Central US", "US", "United States", "Iowa", "41.5908", "-93.6208", "eastus2",
     "R"),
    ("southafricanorth", "South Africa North", "Africa", "South Africa", "Johannesburg",
     "-25.73134", "28.21837", "southafricawest", "R"),
    ("centralindia", "Central India", "Asia Pacific", "India", "Pune", "18.5822", "73.9197",
     "southindia", "R"),
    ("eastasia", "East Asia", "Asia Pacific", "Asia Pacific", "Hong Kong", "22.267", "114.188",
     "southeastasia", "R"),
    ("japaneast", "Japan East", "Asia Pacific", "Japan", "Tokyo, Saitama", "35.68", "139.77",
     "japanwest", "R"),
    ("koreacentral", "Korea Central", "Asia Pacific", "Korea", "Seoul", "37.5665", "126.978",
     "koreasouth", "R"),
    ("canadacentral", "Canada Central", "Canada", "Canada", "Toronto", "43.653", "-79.383",
     "canadaeast", "R"),
    ("francecentral", "France Central", "Europe", "France", "Paris", "46.3772", "2.373",
     "francesouth", "R"),
    ("germanywestcentral", "Germany West Central", "Europe", "Germany", "Frankfurt",
     "50.110924", "8.682127", "germanynorth", "R"),
    ("italynorth", "Italy North", "Europe", "Italy", "Milan", "45.46888", "9.18109", "", "R"),
    ("norwayeast", "Norway East", "Europe", "Norway", "Norway", "59.913868", "10.752245",
     "norwaywest", "R"),
    ("polandcentral", "Poland Central", "Europe", "Poland", "Warsaw", "52.23334", "21.01666",
     "", "R"),
    ("spaincentral", "Spain Central", "Europe", "Spain", "Madrid", "40.4259", "-3.4209", "", "R"),
    ("switzerlandnorth", "Switzerland North", "Europe", "Switzerland", "Zurich", "47.451542",
     "8.564572", "switzerlandwest", "R"),
    ("mexicocentral", "Mexico Central", "Mexico", "Mexico", "Querétaro State", "20.588818",
     "-100.389888", "", "R"),
    ("uaenorth", "UAE North", "Middle East", "UAE", "Dubai", "25.266666", "55.316666",
     "uaecentral", "R"),
    ("brazilsouth", "Brazil South", "South America", "Brazil", "Sao Paulo State", "-23.55",
     "-46.633", "southcentralus", "R"),
    ("israelcentral", "Israel Central", "Middle East", "Israel", "Israel", "31.2655698",
     "33.4506633", "", "R"),
    ("qatarcentral", "Qatar Central", "Middle East", "Qatar", "Doha", "25.551462", "51.439327",
     "", "R"),
    ("northcentralus", "North Central US", "US", "United States", "Illinois", "41.8819",
     "-87.6278", "southcentralus", "O"),
    ("westus", "West US", "US", "United States", "California", "37.783", "-122.417", "eastus",
     "O"),
    ("japanwest", "Japan West", "Asia Pacific", "Japan", "Osaka", "34.6939", "135.5022",
     "japaneast", "O"),
    ("westcentralus", "West Central US", "US", "United States", "Wyoming", "40.890",
     "-110.234", "westus2", "O"),
    ("southafricawest", "South Africa West", "Africa", "South Africa", "Cape Town",
     "-34.075691", "18.843266", "southafricanorth", "O"),
    ("australiacentral", "Australia Central", "Asia Pacific", "Australia", "Canberra",
     "-35.3075", "149.1244", "australiacentral2", "O"),
    ("australiacentral2", "Australia Central 2", "Asia Pacific", "Australia", "Canberra",
     "-35.3075", "149.1244", "australiacentral", "O"),
    ("australiasoutheast", "Australia Southeast", "Asia Pacific", "Australia", "Victoria",
     "-37.8136", "144.9631", "australiaeast", "O"),
    ("koreasouth", "Korea South", "Asia Pacific", "Korea", "Busan", "35.1796", "129.0756",
     "koreacentral", "O"),
    ("southindia", "South India", "Asia Pacific", "India", "Chennai", "12.9822", "80.1636",
     "centralindia", "O"),
    ("westindia", "West India", "Asia Pacific", "India", "Mumbai", "19.088", "72.868",
     "southindia", "O"),
    ("canadaeast", "Canada East", "Canada", "Canada", "Quebec", "46.817", "-71.217",
     "canadacentral", "O"),
    ("francesouth", "France South", "Europe", "France", "Marseille", "43.8345", "2.1972",
     "francecentral", "O"),
    ("germanynorth", "Germany North", "Europe", "Germany", "Berlin", "53.073635", "8.806422",
     "germanywestcentral", "O"),
    ("norwaywest", "Norway West", "Europe", "Norway", "Norway", "58.969975", "5.733107",
     "norwayeast", "O"),
    ("switzerlandwest", "Switzerland West", "Europe", "Switzerland", "Geneva", "46.204391",
     "6.143158", "switzerlandnorth", "O"),
    ("ukwest", "UK West", "Europe", "United Kingdom", "Cardiff", "53.427", "-3.084", "uksouth",
     "O"),
    ("uaecentral", "UAE Central", "Middle East", "UAE", "Abu Dhabi", "24.466667", "54.366669",
     "uaenorth", "O"),
    ("brazilsoutheast", "Brazil Southeast", "South America", "Brazil", "Rio", "-22.90278",
     "-43.2075", "brazilsouth", "O"),
    ("swedensouth", "Sweden South", "Europe", "Sweden", "Malmo", "55.60473", "13.00359",
     "swedencentral", "O"),
)  # fmt: skip
NAMES = frozenset(r[0] for r in _REGIONS)
DISPLAY_NAMES = {r[0]: r[1] for r in _REGIONS}


def normalize(location: str) -> str:
    """'West Europe' -> 'westeurope' (ARM accepts either spelling)."""
    return (location or "").lower().replace(" ", "")


def location_list(subscription_id: str) -> list[dict[str, Any]]:
    """The subscription's locations, as ARM lists them."""
    base = f"/subscriptions/{subscription_id}/locations/"
    found = []
    for name, display, group, geography, place, lat, lon, paired, category in _REGIONS:
        found.append(
            {
                "id": base + name,
                "name": name,
                "type": "Region",
                "displayName": display,
                "regionalDisplayName": f"({group}) {display}",
                "metadata": {
                    "regionType": "Physical",
                    "regionCategory": "Recommended" if category == "R" else "Other",
                    "geography": geography,
                    "geographyGroup": group,
                    "longitude": lon,
                    "latitude": lat,
                    "physicalLocation": place,
                    "pairedRegion": (
                        [{"name": paired, "id": base + paired, "subscriptionId": subscription_id}]
                        if paired
                        else []
                    ),
                },
            }
        )
    return found


def check_location(location: str, resource_type: str | None) -> str:
    """The normalised location, or ARM's 400 for one outside the list: for a resource
    group `LocationNotAvailableForResourceGroup`, for a resource
    `LocationNotAvailableForResourceType` (message shapes as ARM answers them, e.g.
    https://github.com/Azure/azure-rest-api-specs/pull/8347 and
    https://github.com/Azure/pcs-cli/issues/522)."""
    name = normalize(location)
    if name in NAMES:
        return name
    available = ",".join(sorted(NAMES))
    if resource_type is None:
        raise HttpError(
            400,
            "LocationNotAvailableForResourceGroup",
            f"The provided location '{location}' is not available for resource group. List "
            f"of available regions is '{available}'.",
        )
    raise HttpError(
        400,
        "LocationNotAvailableForResourceType",
        f"The provided location '{location}' is not available for resource type "
        f"'{resource_type}'. List of available regions for the resource type is "
        f"'{available}'.",
    )
