"""The five Mars-analog region presets: WGS84 bounding boxes and their UTM zones."""

from __future__ import annotations

from dataclasses import dataclass

from dunemap.registry import choose


@dataclass(frozen=True)
class Region:
    name: str
    description: str
    bbox: tuple[float, float, float, float]  # west, south, east, north in degrees (WGS84)
    epsg: int  # WGS84 / UTM zone of the bbox (326xx north, 327xx south)

    @property
    def utm_zone(self) -> str:
        return f"{self.epsg % 100}{'N' if self.epsg // 100 == 326 else 'S'}"

    @property
    def center(self) -> tuple[float, float]:
        w, s, e, n = self.bbox
        return (w + e) / 2.0, (s + n) / 2.0


REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("namib", "Namib Sand Sea, Namibia: coastal fog desert, linear, star and crescentic dunes",
               (14.50, -26.80, 15.90, -23.40), 32733),
        Region("atacama", "Atacama Desert, Chile: hyper-arid, barchans and sand sheets on gravel plains",
               (-70.50, -27.00, -69.00, -22.50), 32719),
        Region("mojave", "Mojave Desert, USA: Kelso and Dumont dune fields, reversing and star dunes",
               (-116.30, 34.50, -115.40, 35.40), 32611),
        Region("qaidam", "Qaidam Basin, China: cold high-altitude desert, barchans, yardangs and dome dunes",
               (92.00, 36.50, 95.50, 38.50), 32646),
        Region("yilgarn", "Yilgarn Craton, Western Australia: vegetated linear dunes and sand plains",
               (118.50, -30.50, 119.90, -29.00), 32750),
    )
}


def get_region(name: str) -> Region:
    """Look up a preset by name (case-insensitive); a bad name lists the valid ones."""
    return choose(REGIONS, name.lower(), "region")
