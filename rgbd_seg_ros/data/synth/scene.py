"""Procedural indoor rooms: floor, walls with doors and windows, ceiling, furniture, objects.

Everything physical is decided first as a floor plan of ``PlacedObject`` records (footprint,
height range, what supports it), checked for intersections and support, and only then turned
into triangles. Objects stand on the floor, on table / cabinet tops or on shelf boards; wall
furniture stands against a wall and never in front of a door; the free floor that remains is
kept connected and wide enough for a robot to drive through (``Scene.clearance``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from rgbd_seg_ros.data.synth import classes as C
from rgbd_seg_ros.data.synth.geometry2d import inside, overlap, rasterise, rect
from rgbd_seg_ros.data.synth.materials import MaterialBank
from rgbd_seg_ros.data.synth.meshes import Mesh, MeshBuilder

GRID_RES = 0.05  # metres per cell of the clearance grid
CAMERA_CLEARANCE = 0.5  # metres from the camera path to any obstacle


@dataclass
class PlacedObject:
    """One object of the floor plan (its parts share the class and instance)."""

    cls: int
    instance: int
    footprint: np.ndarray  # (4, 2) CCW corners on the floor plan
    z0: float
    z1: float
    support: int  # -1: floor, -2: mounted on a wall or the ceiling, else the supporter's instance
    build: Callable[[MeshBuilder], None] | None = field(default=None, repr=False)


@dataclass
class Light:
    position: np.ndarray
    intensity: float
    shadows: bool


@dataclass
class Scene:
    """A room ready to render."""

    size: tuple[float, float, float]  # X, Y, height (m); the room spans [0,X] x [0,Y] x [0,H]
    mesh: Mesh
    atlas: np.ndarray  # (M, T, T, 3) float32
    mat_scale: np.ndarray
    mat_specular: np.ndarray
    mat_emissive: np.ndarray
    mat_ir_dropout: np.ndarray
    lights: list[Light]
    ambient: float
    exposure: float
    objects: list[PlacedObject]
    clearance: np.ndarray  # (gy, gx) metres to the nearest obstacle or wall, cell centres
    grid_res: float = GRID_RES


@dataclass
class _Surface:
    """A horizontal surface other objects may stand on."""

    poly: np.ndarray
    z: float
    owner: int
    max_height: float
    items: list[np.ndarray] = field(default_factory=list)


class _RoomBuilder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.mats = MaterialBank(rng)
        self.X = float(rng.uniform(3.5, 8.0))
        self.Y = float(rng.uniform(3.2, 7.0))
        self.H = float(rng.uniform(2.5, 3.1))
        self.objects: list[PlacedObject] = []
        self.keepouts: list[tuple[np.ndarray, float]] = []  # (poly, tallest object allowed)
        self.surfaces: list[_Surface] = []
        self.openings: dict[int, list[tuple[float, float]]] = {w: [] for w in range(4)}
        self.structure: list[Callable[[MeshBuilder], None]] = []
        self._next_instance = 0
        self._walls = [  # (origin, along, inward normal)
            (np.array([0.0, 0.0]), np.array([1.0, 0.0])),
            (np.array([self.X, 0.0]), np.array([0.0, 1.0])),
            (np.array([self.X, self.Y]), np.array([-1.0, 0.0])),
            (np.array([0.0, self.Y]), np.array([0.0, -1.0])),
        ]

    # ---- helpers ------------------------------------------------------------------------
    def instance(self) -> int:
        self._next_instance += 1
        return self._next_instance

    def wall_len(self, w: int) -> float:
        return self.X if w % 2 == 0 else self.Y

    def wall_xy(self, w: int, u: float, s: float) -> np.ndarray:
        o, e = self._walls[w]
        n = np.array([-e[1], e[0]])
        return o + u * e + s * n

    def wall_yaw(self, w: int) -> float:
        e = self._walls[w][1]
        return float(np.arctan2(e[1], e[0]))

    def wall_box(self, b: MeshBuilder, w: int, u0, u1, s0, s1, z0, z1, cls, mat, inst) -> None:
        """Box aligned with wall ``w``: along-wall [u0,u1], inward [s0,s1], height [z0,z1]."""
        cxy = self.wall_xy(w, (u0 + u1) / 2, (s0 + s1) / 2)
        b.box(
            [cxy[0], cxy[1], (z0 + z1) / 2],
            [u1 - u0, s1 - s0, z1 - z0],
            self.wall_yaw(w),
            cls,
            mat,
            inst,
        )

    def wall_quad(self, b: MeshBuilder, w: int, pts, cls, mat, inst) -> None:
        """Quad from (u, s, z) triples in wall coordinates."""
        corners = [[*self.wall_xy(w, u, s), z] for u, s, z in pts]
        b.quad(corners, cls, mat, inst)

    def fits(
        self,
        poly: np.ndarray,
        z0: float,
        z1: float,
        margin: float = 0.03,
        ignore: int | None = None,
    ) -> bool:
        """Free floor-plan spot: inside the room, clear of objects and door/window keep-outs."""
        if poly[:, 0].min() < 0.0 or poly[:, 1].min() < 0.0:
            return False
        if poly[:, 0].max() > self.X or poly[:, 1].max() > self.Y:
            return False
        for ko, tallest in self.keepouts:
            if z1 > tallest and overlap(poly, ko):
                return False
        for obj in self.objects:
            if obj.instance == ignore or obj.z1 <= z0 or obj.z0 >= z1:
                continue
            if overlap(poly, obj.footprint, margin):
                return False
        return True

    def add(self, cls, inst, poly, z0, z1, support, build) -> PlacedObject:
        obj = PlacedObject(cls, inst, poly, float(z0), float(z1), support, build)
        self.objects.append(obj)
        return obj

    # ---- structure -----------------------------------------------------------------------
    def plan_openings(self) -> list[dict]:
        rng = self.rng
        plans: list[dict] = []
        n_doors = 1 + int(rng.random() < 0.3)
        n_windows = int(rng.integers(0, 4))
        for kind in ['door'] * n_doors + ['window'] * n_windows:
            for _ in range(20):
                w = int(rng.integers(0, 4))
                length = self.wall_len(w)
                if kind == 'door':
                    width = rng.uniform(0.8, 0.95)
                    z0, z1 = 0.0, rng.uniform(2.0, min(2.15, self.H - 0.25))
                else:
                    width = rng.uniform(0.7, min(1.8, length - 1.0))
                    z0 = rng.uniform(0.75, 1.0)
                    z1 = min(rng.uniform(1.9, 2.3), self.H - 0.25)
                if length - width < 0.8:
                    continue
                u0 = rng.uniform(0.35, length - width - 0.35)
                u1 = u0 + width
                if any(u0 < b + 0.3 and a < u1 + 0.3 for a, b in self.openings[w]):
                    continue
                self.openings[w].append((u0, u1))
                plans.append(dict(kind=kind, wall=w, u0=u0, u1=u1, z0=z0, z1=z1))
                break
        return plans

    def build_structure(self) -> None:
        rng = self.rng
        mats = self.mats
        X, Y, H = self.X, self.Y, self.H
        floor_mat = self.floor_mat = mats.flooring()
        wall_mat = self.wall_mat = mats.paint()
        ceil_mat = wall_mat if rng.random() < 0.6 else mats.paint()
        base_mat = wall_mat if rng.random() < 0.3 else mats.furniture()
        plans = self.plan_openings()

        floor_inst, ceil_inst = self.instance(), self.instance()
        wall_insts = [self.instance() for _ in range(4)]

        def floor_and_ceiling(b: MeshBuilder) -> None:
            b.quad([[0, 0, 0], [X, 0, 0], [X, Y, 0], [0, Y, 0]], C.FLOOR, floor_mat, floor_inst)
            b.quad([[0, 0, H], [X, 0, H], [X, Y, H], [0, Y, H]], C.CEILING, ceil_mat, ceil_inst)
            # A shell just outside the room: rays that slip through a seam (floor/wall edges,
            # door thresholds) hit the same class behind it instead of escaping unlabelled.
            e, lo, hi = 1.0, -0.002, H + 0.002
            b.quad(
                [[-e, -e, lo], [X + e, -e, lo], [X + e, Y + e, lo], [-e, Y + e, lo]],
                C.FLOOR,
                floor_mat,
                floor_inst,
            )
            b.quad(
                [[-e, -e, hi], [X + e, -e, hi], [X + e, Y + e, hi], [-e, Y + e, hi]],
                C.CEILING,
                ceil_mat,
                ceil_inst,
            )
            for w in range(4):
                length = self.wall_len(w)
                self.wall_quad(
                    b,
                    w,
                    [
                        (-e, -0.4, lo),
                        (length + e, -0.4, lo),
                        (length + e, -0.4, hi),
                        (-e, -0.4, hi),
                    ],
                    C.WALL,
                    wall_mat,
                    wall_insts[w],
                )

        self.structure.append(floor_and_ceiling)

        bb_h, bb_t = rng.uniform(0.05, 0.11), rng.uniform(0.01, 0.018)
        for w in range(4):
            length = self.wall_len(w)
            ops = sorted((p for p in plans if p['wall'] == w), key=lambda p: p['u0'])

            def wall(b: MeshBuilder, w=w, length=length, ops=ops) -> None:
                inst = wall_insts[w]
                cuts = [0.0]
                for p in ops:
                    cuts += [p['u0'], p['u1']]
                cuts.append(length)
                for i in range(0, len(cuts), 2):  # solid strips between openings
                    a, c = cuts[i], cuts[i + 1]
                    self.wall_quad(
                        b, w, [(a, 0, 0), (c, 0, 0), (c, 0, H), (a, 0, H)], C.WALL, wall_mat, inst
                    )
                    self.wall_box(b, w, a, c, 0.0, bb_t, 0.0, bb_h, C.WALL, base_mat, inst)
                for p in ops:  # above (and below) each opening
                    u0, u1, z0, z1 = p['u0'], p['u1'], p['z0'], p['z1']
                    self.wall_quad(
                        b,
                        w,
                        [(u0, 0, z1), (u1, 0, z1), (u1, 0, H), (u0, 0, H)],
                        C.WALL,
                        wall_mat,
                        inst,
                    )
                    if z0 > 0:
                        self.wall_quad(
                            b,
                            w,
                            [(u0, 0, 0), (u1, 0, 0), (u1, 0, z0), (u0, 0, z0)],
                            C.WALL,
                            wall_mat,
                            inst,
                        )
                        self.wall_box(b, w, u0, u1, 0.0, bb_t, 0.0, bb_h, C.WALL, base_mat, inst)

            self.structure.append(wall)

        for p in plans:
            if p['kind'] == 'door':
                self.plan_door(p)
            else:
                self.plan_window(p)

    def plan_door(self, p: dict) -> None:
        rng, w = self.rng, p['wall']
        u0, u1, z1 = p['u0'], p['u1'], p['z1']
        recess = rng.uniform(0.03, 0.08)
        trim_w, trim_t = rng.uniform(0.05, 0.09), rng.uniform(0.012, 0.025)
        slab_mat = self.wall_mat if rng.random() < 0.3 else self.mats.furniture()
        frame_mat = slab_mat if rng.random() < 0.5 else self.mats.furniture()
        handle_mat = self.mats.add('metal', np.array([0.6, 0.6, 0.62]), 0.3, specular=0.6)
        inst = self.instance()
        hinge_left = rng.random() < 0.5

        def door(b: MeshBuilder) -> None:
            r = -recess
            self.wall_quad(
                b, w, [(u0, r, 0), (u1, r, 0), (u1, r, z1), (u0, r, z1)], C.DOOR, slab_mat, inst
            )
            for u in (u0, u1):  # jambs
                self.wall_quad(
                    b, w, [(u, 0, 0), (u, r, 0), (u, r, z1), (u, 0, z1)], C.DOOR, frame_mat, inst
                )
            self.wall_quad(
                b, w, [(u0, 0, z1), (u1, 0, z1), (u1, r, z1), (u0, r, z1)], C.DOOR, frame_mat, inst
            )
            self.wall_quad(
                b,
                w,
                [(u0, 0, 0.001), (u1, 0, 0.001), (u1, r, 0.001), (u0, r, 0.001)],
                C.DOOR,
                frame_mat,
                inst,
            )
            self.wall_box(
                b, w, u0 - trim_w, u0, 0, trim_t, 0, z1 + trim_w, C.DOOR, frame_mat, inst
            )
            self.wall_box(
                b, w, u1, u1 + trim_w, 0, trim_t, 0, z1 + trim_w, C.DOOR, frame_mat, inst
            )
            self.wall_box(b, w, u0, u1, 0, trim_t, z1, z1 + trim_w, C.DOOR, frame_mat, inst)
            hu = u1 - 0.09 if hinge_left else u0 + 0.09
            self.wall_box(
                b, w, hu - 0.015, hu + 0.015, r, r + 0.06, 0.98, 1.02, C.DOOR, handle_mat, inst
            )
            self.wall_box(
                b,
                w,
                hu - 0.06 if hinge_left else hu - 0.015,
                hu + 0.015 if hinge_left else hu + 0.06,
                r + 0.045,
                r + 0.065,
                0.985,
                1.015,
                C.DOOR,
                handle_mat,
                inst,
            )

        poly = self.wall_rect(w, u0 - trim_w, u1 + trim_w, 0.0, trim_t)
        self.add(C.DOOR, inst, poly, 0.0, z1 + trim_w, -2, door)
        self.keepouts.append((self.wall_rect(w, u0 - 0.15, u1 + 0.15, 0.0, 1.0), 0.0))

    def plan_window(self, p: dict) -> None:
        rng, w = self.rng, p['wall']
        u0, u1, z0, z1 = p['u0'], p['u1'], p['z0'], p['z1']
        recess = rng.uniform(0.1, 0.22)
        glass = self.mats.glass()
        frame_mat = (
            self.mats.add('plain', np.full(3, rng.uniform(0.7, 0.95)), specular=0.2)
            if rng.random() < 0.6
            else self.mats.wood()
        )
        sill_mat = frame_mat if rng.random() < 0.5 else self.mats.furniture()
        sill_out, sill_t = rng.uniform(0.03, 0.07), rng.uniform(0.025, 0.045)
        bar = rng.uniform(0.035, 0.06)
        n_panes = int(rng.integers(1, 4))
        cross = rng.random() < 0.5
        inst = self.instance()
        wall_inst = self.instance()
        wall_mat = self.wall_mat

        def window(b: MeshBuilder) -> None:
            r = -recess
            self.wall_quad(
                b, w, [(u0, r, z0), (u1, r, z0), (u1, r, z1), (u0, r, z1)], C.WINDOW, glass, inst
            )
            for u in (u0, u1):  # reveals: plaster
                self.wall_quad(
                    b,
                    w,
                    [(u, 0, z0), (u, r, z0), (u, r, z1), (u, 0, z1)],
                    C.WALL,
                    wall_mat,
                    wall_inst,
                )
            self.wall_quad(
                b,
                w,
                [(u0, 0, z1), (u1, 0, z1), (u1, r, z1), (u0, r, z1)],
                C.WALL,
                wall_mat,
                wall_inst,
            )
            # frame on the glass
            f0, f1 = r, r + 0.05
            self.wall_box(b, w, u0, u1, f0, f1, z1 - bar, z1, C.WINDOW, frame_mat, inst)
            self.wall_box(b, w, u0, u1, f0, f1, z0, z0 + bar, C.WINDOW, frame_mat, inst)
            self.wall_box(b, w, u0, u0 + bar, f0, f1, z0, z1, C.WINDOW, frame_mat, inst)
            self.wall_box(b, w, u1 - bar, u1, f0, f1, z0, z1, C.WINDOW, frame_mat, inst)
            for k in range(1, n_panes):
                uc = u0 + (u1 - u0) * k / n_panes
                self.wall_box(
                    b, w, uc - bar / 2, uc + bar / 2, f0, f1, z0, z1, C.WINDOW, frame_mat, inst
                )
            if cross:
                zc = z0 + 0.6 * (z1 - z0)
                self.wall_box(
                    b,
                    w,
                    u0,
                    u1,
                    f0,
                    f1 - 0.01,
                    zc - bar / 3,
                    zc + bar / 3,
                    C.WINDOW,
                    frame_mat,
                    inst,
                )
            # sill: from the glass to a little into the room
            self.wall_box(
                b, w, u0 - 0.04, u1 + 0.04, r, sill_out, z0 - sill_t, z0, C.WINDOW, sill_mat, inst
            )

        poly = self.wall_rect(w, u0 - 0.04, u1 + 0.04, 0.0, sill_out)
        self.add(C.WINDOW, inst, poly, z0 - sill_t, z1, -2, window)
        self.keepouts.append((self.wall_rect(w, u0 - 0.1, u1 + 0.1, 0.0, 0.7), z0 - sill_t - 0.02))

    def wall_rect(self, w: int, u0: float, u1: float, s0: float, s1: float) -> np.ndarray:
        yaw = self.wall_yaw(w)
        centre = self.wall_xy(w, (u0 + u1) / 2, (s0 + s1) / 2)
        return rect(centre, (u1 - u0) / 2, (s1 - s0) / 2, yaw)

    # ---- furniture -----------------------------------------------------------------------
    def try_wall_item(self, depth: float, width: float, height: float, tries: int = 30):
        """A spot against a wall: returns (centre xy, yaw facing into the room, poly)."""
        for _ in range(tries):
            w = int(self.rng.integers(0, 4))
            length = self.wall_len(w)
            if length < width + 0.1:
                continue
            u = self.rng.uniform(width / 2 + 0.02, length - width / 2 - 0.02)
            gap = self.rng.uniform(0.015, 0.04)
            poly = self.wall_rect(w, u - width / 2, u + width / 2, gap, gap + depth)
            if self.fits(poly, 0.0, height, margin=0.05):
                return self.wall_xy(w, u, gap + depth / 2), self.wall_yaw(w), poly
        return None

    def try_floor_spot(
        self,
        half_x: float,
        half_y: float,
        height: float,
        wall_margin: float,
        yaw=None,
        tries: int = 40,
        margin: float = 0.06,
    ):
        for _ in range(tries):
            lo = wall_margin + max(half_x, half_y)
            if self.X - 2 * lo < 0 or self.Y - 2 * lo < 0:
                return None
            c = np.array([self.rng.uniform(lo, self.X - lo), self.rng.uniform(lo, self.Y - lo)])
            a = float(self.rng.uniform(0, 2 * np.pi)) if yaw is None else float(yaw)
            poly = rect(c, half_x, half_y, a)
            if self.fits(poly, 0.0, height, margin=margin):
                return c, a, poly
        return None

    def shelf(self) -> None:
        rng = self.rng
        width, depth = rng.uniform(0.6, 1.3), rng.uniform(0.28, 0.42)
        height = rng.uniform(1.1, 2.1)
        spot = self.try_wall_item(depth, width, height)
        if spot is None:
            return
        c, yaw, poly = spot
        mat = self.mats.furniture() if rng.random() < 0.8 else self.wall_mat
        t = rng.uniform(0.018, 0.03)
        n_boards = int(rng.integers(3, 6))
        levels = np.linspace(0.06, height - t, n_boards + 1)
        inst = self.instance()
        back = rng.random() < 0.7

        def build(b: MeshBuilder) -> None:
            put = _Local(c, yaw, b, C.SHELF, mat, inst)
            put.box(-width / 2 + t / 2, 0, height / 2, t, depth, height)
            put.box(width / 2 - t / 2, 0, height / 2, t, depth, height)
            for z in levels:
                put.box(0, 0, z + t / 2, width - 2 * t, depth, t)
            put.box(0, depth / 2 - 0.01, 0.03, width - 2 * t, 0.02, 0.06)  # kick plate
            if back:
                put.box(0, -depth / 2 + 0.005, height / 2, width - 2 * t, 0.01, height)

        self.add(C.SHELF, inst, poly, 0.0, height, -1, build)
        for k in range(len(levels) - 1):
            z = float(levels[k] + t)
            clear = float(levels[k + 1] - levels[k] - t)
            board = rect(
                c + _rot(yaw) @ [0, 0.005 if back else 0], width / 2 - t, depth / 2 - 0.01, yaw
            )
            self.surfaces.append(_Surface(board, z, inst, clear - 0.02))

    def cabinet(self) -> None:
        rng = self.rng
        width, depth = rng.uniform(0.5, 1.4), rng.uniform(0.38, 0.6)
        height = rng.uniform(0.7, 1.1) if rng.random() < 0.7 else rng.uniform(1.6, 2.0)
        spot = self.try_wall_item(depth, width, height)
        if spot is None:
            return
        c, yaw, poly = spot
        body_mat = self.wall_mat if rng.random() < 0.3 else self.mats.furniture()
        door_mat = body_mat if rng.random() < 0.6 else self.mats.furniture()
        handle_mat = self.mats.add('metal', np.array([0.55, 0.55, 0.58]), 0.3, specular=0.6)
        n_doors = max(1, round(width / rng.uniform(0.4, 0.6)))
        plinth = rng.uniform(0.0, 0.1)
        inst = self.instance()
        drawers = rng.random() < 0.4

        def build(b: MeshBuilder) -> None:
            put = _Local(c, yaw, b, C.CABINET, body_mat, inst)
            if plinth > 0.01:
                put.box(0, -0.03, plinth / 2, width - 0.04, depth - 0.06, plinth)
            put.box(0, -0.01, plinth + (height - plinth) / 2, width, depth - 0.02, height - plinth)
            dw = width / n_doors
            rows = 3 if drawers else 1
            dh = (height - plinth) / rows
            for i in range(n_doors):
                for j in range(rows):
                    x = -width / 2 + dw * (i + 0.5)
                    z = plinth + dh * (j + 0.5)
                    put.box(x, depth / 2 - 0.01, z, dw - 0.006, 0.02, dh - 0.006, door_mat)
                    hx = x + (0 if drawers else (dw / 2 - 0.05) * (1 if i % 2 == 0 else -1))
                    hz = z + (0 if drawers else dh * 0.25 if height < 1.2 else 0)
                    put.box(
                        hx,
                        depth / 2 + 0.015,
                        hz,
                        0.12 if drawers else 0.02,
                        0.03,
                        0.02 if drawers else 0.12,
                        handle_mat,
                    )

        self.add(C.CABINET, inst, poly, 0.0, height, -1, build)
        if height < 1.3:
            top = rect(c + _rot(yaw) @ [0, -0.01], width / 2 - 0.03, depth / 2 - 0.04, yaw)
            self.surfaces.append(_Surface(top, height, inst, 0.6))

    def sofa(self) -> None:
        rng = self.rng
        width, depth = rng.uniform(1.4, 2.3), rng.uniform(0.8, 0.98)
        seat_h, back_h = rng.uniform(0.4, 0.47), rng.uniform(0.75, 0.95)
        arm_h, arm_w = rng.uniform(0.52, 0.66), rng.uniform(0.12, 0.22)
        spot = self.try_wall_item(depth, width, back_h)
        if spot is None:
            return
        c, yaw, poly = spot
        fab = self.mats.fabric()
        cushion = fab if rng.random() < 0.7 else self.mats.fabric()
        back_t = rng.uniform(0.16, 0.24)
        n_cush = 2 if width < 1.8 else 3
        base_h = seat_h - 0.12
        inst = self.instance()

        def build(b: MeshBuilder) -> None:
            put = _Local(c, yaw, b, C.SOFA, fab, inst)
            put.box(0, 0, 0.04 + base_h / 2, width, depth, base_h)
            for x in (-width / 2 + 0.03, width / 2 - 0.03):
                put.box(x, depth / 2 - 0.05, 0.02, 0.04, 0.04, 0.04)
                put.box(x, -depth / 2 + 0.05, 0.02, 0.04, 0.04, 0.04)
            put.box(0, -depth / 2 + back_t / 2, back_h / 2 + 0.02, width, back_t, back_h - 0.04)
            for x in (-width / 2 + arm_w / 2, width / 2 - arm_w / 2):
                put.box(x, 0, arm_h / 2 + 0.02, arm_w, depth, arm_h - 0.04)
            inner = width - 2 * arm_w
            cw = inner / n_cush
            for i in range(n_cush):
                x = -inner / 2 + cw * (i + 0.5)
                put.box(
                    x,
                    back_t / 2,
                    0.04 + base_h + 0.06,
                    cw - 0.012,
                    depth - back_t - 0.01,
                    0.12,
                    cushion,
                )
                put.box(
                    x, -depth / 2 + back_t + 0.06, seat_h + 0.2, cw - 0.012, 0.12, 0.3, cushion
                )

        self.add(C.SOFA, inst, poly, 0.0, back_h, -1, build)

    def table(self) -> np.ndarray | None:
        rng = self.rng
        width, depth = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)
        height, top_t = rng.uniform(0.7, 0.78), rng.uniform(0.025, 0.05)
        yaw = float(rng.choice([0.0, np.pi / 2])) + rng.normal(0, 0.08) * (rng.random() < 0.4)
        spot = self.try_floor_spot(width / 2, depth / 2, height, wall_margin=0.25, yaw=yaw)
        if spot is None:
            return None
        c, yaw, poly = spot
        top_mat = self.floor_mat if rng.random() < 0.35 else self.mats.furniture()
        leg_mat = top_mat if rng.random() < 0.6 else self.mats.furniture()
        leg = rng.uniform(0.035, 0.07)
        round_legs = rng.random() < 0.3
        inset = rng.uniform(0.03, 0.1)
        apron = rng.random() < 0.5
        inst = self.instance()

        def build(b: MeshBuilder) -> None:
            put = _Local(c, yaw, b, C.TABLE, top_mat, inst)
            put.box(0, 0, height - top_t / 2, width, depth, top_t)
            lh = height - top_t
            for sx in (-1, 1):
                for sy in (-1, 1):
                    x, y = sx * (width / 2 - inset - leg / 2), sy * (depth / 2 - inset - leg / 2)
                    if round_legs:
                        put.cylinder(x, y, 0.0, leg / 2, leg / 2, lh, leg_mat)
                    else:
                        put.box(x, y, lh / 2, leg, leg, lh, leg_mat)
            if apron:
                ah = 0.08
                put.box(
                    0,
                    depth / 2 - inset - leg / 2,
                    lh - ah / 2,
                    width - 2 * inset - leg,
                    0.02,
                    ah,
                    leg_mat,
                )
                put.box(
                    0,
                    -(depth / 2 - inset - leg / 2),
                    lh - ah / 2,
                    width - 2 * inset - leg,
                    0.02,
                    ah,
                    leg_mat,
                )

        self.add(C.TABLE, inst, poly, 0.0, height, -1, build)
        self.surfaces.append(
            _Surface(rect(c, width / 2 - 0.04, depth / 2 - 0.04, yaw), height, inst, 0.7)
        )
        return np.array([c[0], c[1], yaw, width, depth])

    def chair(self, center=None, yaw=None) -> None:
        rng = self.rng
        seat, seat_h = rng.uniform(0.4, 0.5), rng.uniform(0.42, 0.48)
        back_h = rng.uniform(0.35, 0.5)
        height = seat_h + back_h
        if center is None:
            spot = self.try_floor_spot(seat / 2, seat / 2 + 0.02, height, wall_margin=0.1)
            if spot is None:
                return
            c, yaw, poly = spot
        else:
            c = np.asarray(center)
            poly = rect(c, seat / 2, seat / 2 + 0.02, yaw)
            if not self.fits(poly, 0.0, height, margin=0.05):
                return
        mat = self.chair_mat if rng.random() < 0.7 else self.mats.furniture()
        leg_mat = mat if rng.random() < 0.5 else self.mats.furniture()
        seat_mat = mat if rng.random() < 0.6 else self.mats.fabric()
        leg, seat_t, back_t = rng.uniform(0.025, 0.045), rng.uniform(0.03, 0.07), 0.03
        slats = rng.random() < 0.4
        inst = self.instance()

        def build(b: MeshBuilder) -> None:
            put = _Local(c, yaw, b, C.CHAIR, mat, inst)
            put.box(0, 0, seat_h - seat_t / 2, seat, seat, seat_t, seat_mat)
            lh = seat_h - seat_t
            for sx in (-1, 1):
                for sy in (-1, 1):
                    put.box(
                        sx * (seat / 2 - leg / 2),
                        sy * (seat / 2 - leg / 2),
                        lh / 2,
                        leg,
                        leg,
                        lh,
                        leg_mat,
                    )
            yb = -seat / 2 + back_t / 2  # the back is at local -y, the front faces +y
            if slats:
                for sx in (-1, 1):
                    put.box(
                        sx * (seat / 2 - leg / 2),
                        yb,
                        seat_h + back_h / 2,
                        leg,
                        back_t,
                        back_h,
                        leg_mat,
                    )
                for k in range(3):
                    put.box(
                        0,
                        yb,
                        seat_h + back_h * (0.4 + 0.25 * k),
                        seat - 2 * leg,
                        back_t * 0.8,
                        0.05,
                    )
            else:
                put.box(0, yb, seat_h + back_h / 2, seat, back_t, back_h)

        self.add(C.CHAIR, inst, poly, 0.0, height, -1, build)

    def chairs_around(self, table: np.ndarray) -> None:
        cx, cy, yaw, width, depth = table
        rot = _rot(yaw)
        sides = [
            (np.array([0.0, 1.0]), width),
            (np.array([0.0, -1.0]), width),
            (np.array([1.0, 0.0]), depth),
            (np.array([-1.0, 0.0]), depth),
        ]
        for normal, length in sides:
            n_here = 2 if length > 1.4 and self.rng.random() < 0.6 else 1
            for k in range(n_here):
                if self.rng.random() > 0.6:
                    continue
                along = np.array([-normal[1], normal[0]])
                offset = (k - (n_here - 1) / 2) * length / n_here
                half_extent = (depth if normal[1] != 0 else width) / 2
                local = normal * (half_extent + self.rng.uniform(0.3, 0.45)) + along * offset
                centre = np.array([cx, cy]) + rot @ local
                world_n = rot @ normal
                # the chair's front (+y local) faces the table: its local +y points along -n
                chair_yaw = float(np.arctan2(-world_n[1], -world_n[0]) - np.pi / 2)
                chair_yaw += self.rng.normal(0, 0.12)
                self.chair(centre, chair_yaw)

    def floor_box(self, on: _Surface | None = None) -> None:
        rng = self.rng
        mat = self.box_material()
        if on is None:
            sx, sy, sz = rng.uniform(0.25, 0.65, 3)
            spot = self.try_floor_spot(sx / 2, sy / 2, sz, wall_margin=0.02)
            if spot is None:
                return
            c, yaw, poly = spot
            inst = self.instance()
            self.add(
                C.BOX, inst, poly, 0.0, sz, -1, _box_builder(c, 0.0, yaw, sx, sy, sz, mat, inst)
            )
            if rng.random() < 0.35:  # stack a smaller one on top
                top = rect(c, sx / 2, sy / 2, yaw)
                self.surfaces.append(_Surface(top, sz, inst, 0.6))
                self.item_on(self.surfaces[-1], 'box')
                self.surfaces.pop()
            return
        self.item_on(on, 'box')

    def box_material(self) -> int:
        pick = self.rng.random()
        if pick < 0.35:
            return self.wall_mat  # a box painted exactly like the wall
        if pick < 0.75:
            return self.mats.cardboard()
        if pick < 0.85:
            return self.floor_mat
        return self.mats.bright() if self.rng.random() < 0.5 else self.mats.furniture()

    def item_on(self, surf: _Surface, kind: str) -> None:
        """Put a box / ball / lamp on a surface (table top, cabinet top, shelf board, box)."""
        rng = self.rng
        poly = surf.poly
        centre = poly.mean(0)
        ex = np.linalg.norm(poly[1] - poly[0]) / 2
        ey = np.linalg.norm(poly[3] - poly[0]) / 2
        yaw0 = float(np.arctan2(*(poly[1] - poly[0])[::-1]))
        for _ in range(15):
            if kind == 'box':
                sx, sy = rng.uniform(0.08, 0.4, 2)
                sz = rng.uniform(0.06, 0.35)
                hx, hy = sx / 2, sy / 2
            elif kind == 'ball':
                r = rng.uniform(0.05, 0.13)
                hx = hy = r
                sz = 2 * r
            else:  # lamp
                r = rng.uniform(0.09, 0.14)
                hx = hy = r
                sz = rng.uniform(0.35, 0.55)
            if sz > surf.max_height or hx > ex or hy > ey:
                continue
            yaw = yaw0 + (rng.normal(0, 0.3) if kind == 'box' else 0.0)
            local = np.array([rng.uniform(-ex + hx, ex - hx), rng.uniform(-ey + hy, ey - hy)])
            c = centre + _rot(yaw0) @ local
            fp = rect(c, hx, hy, yaw)
            if not inside(fp, poly) or any(overlap(fp, other, 0.02) for other in surf.items):
                continue
            surf.items.append(fp)
            inst = self.instance()
            z = surf.z
            if kind == 'box':
                build = _box_builder(c, z, yaw, sx, sy, sz, self.box_material(), inst)
                cls = C.BOX
            elif kind == 'ball':
                build = _ball_builder(c, z, r, self.mats.bright(), inst)
                cls = C.BALL
            else:
                build = self.lamp_builder(c, z, r, sz, inst, table=True)
                cls = C.LAMP
            self.add(cls, inst, fp, z, z + sz, surf.owner, build)
            if kind == 'box' and rng.random() < 0.25:
                stack = _Surface(rect(c, hx, hy, yaw), z + sz, inst, surf.max_height - sz)
                self.item_on(stack, 'box')
            return

    def ball(self) -> None:
        r = self.rng.uniform(0.1, 0.35)
        spot = self.try_floor_spot(r, r, 2 * r, wall_margin=0.02)
        if spot is None:
            return
        c = spot[0]
        inst = self.instance()
        self.add(
            C.BALL,
            inst,
            rect(c, r, r, 0.0),
            0.0,
            2 * r,
            -1,
            _ball_builder(c, 0.0, r, self.mats.bright(), inst),
        )

    def column(self) -> None:
        """A person-sized column: a cylinder with a rounded top."""
        rng = self.rng
        r, h = rng.uniform(0.15, 0.26), rng.uniform(1.5, 1.9)
        spot = self.try_floor_spot(r, r, h, wall_margin=0.15)
        if spot is None:
            return
        c, _, _ = spot
        mat = (
            self.wall_mat
            if rng.random() < 0.3
            else (self.mats.fabric() if rng.random() < 0.5 else self.mats.furniture())
        )
        inst = self.instance()

        def build(b: MeshBuilder) -> None:
            b.frustum([c[0], c[1], 0.0], r, r, h - r, C.COLUMN, mat, inst, segments=24, caps=False)
            b.sphere([c[0], c[1], h - r], r, C.COLUMN, mat, inst, segments=24, rings=12)

        self.add(C.COLUMN, inst, rect(c, r, r, 0.0), 0.0, h, -1, build)

    def lamp_builder(self, c, z, r, h, inst, table: bool):
        pole_mat = self.mats.add(
            'metal', np.full(3, self.rng.uniform(0.1, 0.8)), 0.3, specular=0.5
        )
        shade_col = np.clip(np.array([1.0, 0.93, 0.8]) * self.rng.uniform(0.7, 1.0), 0, 1)
        shade_mat = self.mats.add('fabric', shade_col, 0.5, emissive=0.0)
        shade_h = h * (0.3 if table else 0.18)
        shade_r = r * (1.0 if table else 0.85)

        def build(b: MeshBuilder) -> None:
            b.frustum([c[0], c[1], z], r * 0.7, r * 0.7, 0.025, C.LAMP, pole_mat, inst)
            b.frustum(
                [c[0], c[1], z + 0.025],
                0.012,
                0.012,
                h - shade_h - 0.025,
                C.LAMP,
                pole_mat,
                inst,
                segments=10,
                caps=False,
            )
            b.frustum(
                [c[0], c[1], z + h - shade_h],
                shade_r,
                shade_r * 0.65,
                shade_h,
                C.LAMP,
                shade_mat,
                inst,
            )

        return build

    def floor_lamp(self) -> None:
        r, h = self.rng.uniform(0.16, 0.24), self.rng.uniform(1.35, 1.75)
        spot = self.try_floor_spot(r, r, h, wall_margin=0.05)
        if spot is None:
            return
        c, _, _ = spot
        inst = self.instance()
        self.add(
            C.LAMP,
            inst,
            rect(c, r, r, 0.0),
            0.0,
            h,
            -1,
            self.lamp_builder(c, 0.0, r, h, inst, table=False),
        )

    def ceiling_lights(self) -> list[Light]:
        rng = self.rng
        lights = []
        n = 1 if self.X * self.Y < 22 or rng.random() < 0.4 else 2
        mat = self.mats.light()
        for k in range(n):
            if n == 1:
                x, y = rng.uniform(0.35, 0.65) * self.X, rng.uniform(0.35, 0.65) * self.Y
            else:
                along_x = self.X >= self.Y
                f = (k + 0.5) / n + rng.uniform(-0.05, 0.05)
                x = f * self.X if along_x else rng.uniform(0.4, 0.6) * self.X
                y = rng.uniform(0.4, 0.6) * self.Y if along_x else f * self.Y
            size = rng.uniform(0.3, 0.6)
            round_ = rng.random() < 0.4
            inst = self.instance()
            H = self.H

            def build(b: MeshBuilder, x=x, y=y, size=size, round_=round_, inst=inst, H=H) -> None:
                if round_:
                    b.frustum([x, y, H - 0.04], size / 2, size / 2, 0.04, C.LAMP, mat, inst)
                else:
                    b.box([x, y, H - 0.02], [size, size, 0.04], 0.0, C.LAMP, mat, inst)

            self.add(C.LAMP, inst, rect([x, y], size / 2, size / 2, 0.0), H - 0.04, H, -2, build)
            intensity = rng.uniform(3.0, 5.5) * (self.H / 2.8) ** 2 / np.sqrt(n)
            lights.append(Light(np.array([x, y, H - 0.12]), float(intensity), k == 0))
        return lights

    # ---- whole room ----------------------------------------------------------------------
    def furnish(self) -> None:
        rng = self.rng
        area = self.X * self.Y
        self.chair_mat = self.mats.furniture()
        for _ in range(int(rng.integers(0, 3)) + int(area > 30)):
            self.shelf()
        for _ in range(int(rng.integers(0, 3)) + int(area > 30)):
            self.cabinet()
        if rng.random() < 0.55:
            self.sofa()
        n_tables = 1 + int(area > 25 and rng.random() < 0.5)
        for _ in range(n_tables):
            table = self.table()
            if table is not None:
                self.chairs_around(table)
        for _ in range(int(rng.integers(0, 3))):
            self.chair()
        for _ in range(int(rng.integers(1, 4))):
            self.column()
        if rng.random() < 0.5:
            self.floor_lamp()
        for _ in range(int(rng.integers(2, 5)) + int(area / 15)):
            self.floor_box()
        for _ in range(int(rng.integers(0, 4))):
            self.ball()
        for surf in list(self.surfaces):
            owner = next(o for o in self.objects if o.instance == surf.owner)
            if owner.cls == C.SHELF:
                n_items, kinds, p = 3, ['box'], 0.55
            elif owner.cls == C.TABLE:
                n_items, kinds, p = 3, ['box', 'box', 'ball', 'lamp'], 0.6
            else:
                n_items, kinds, p = 2, ['box', 'lamp', 'ball'], 0.5
            for _ in range(n_items):
                if rng.random() < p:
                    self.item_on(surf, str(rng.choice(kinds)))

    def clearance_grid(self) -> np.ndarray:
        xs = (np.arange(int(np.ceil(self.X / GRID_RES))) + 0.5) * GRID_RES
        ys = (np.arange(int(np.ceil(self.Y / GRID_RES))) + 0.5) * GRID_RES
        free = np.ones((len(ys), len(xs)), np.uint8)
        for obj in self.objects:
            if obj.support == -1 or (obj.support == -2 and obj.z0 < 1.9):
                free[rasterise(obj.footprint, xs, ys)] = 0
        padded = np.pad(free, 1)  # walls
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        return (dist * GRID_RES).astype(np.float32)

    def dependants(self, instance: int) -> set[int]:
        out = {instance}
        changed = True
        while changed:
            changed = False
            for o in self.objects:
                if o.support in out and o.instance not in out:
                    out.add(o.instance)
                    changed = True
        return out

    def ensure_walkable(self) -> np.ndarray:
        """Drop floor furniture until the free floor is connected and large enough."""
        need = max(3.0, 0.22 * self.X * self.Y)
        while True:
            clearance = self.clearance_grid()
            free = (clearance >= CAMERA_CLEARANCE).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=8)
            best = stats[1:, cv2.CC_STAT_AREA].max() * GRID_RES**2 if n > 1 else 0.0
            if best >= need:
                return clearance
            removable = [o for o in self.objects if o.support == -1]
            if not removable:
                return clearance
            victim = removable[int(self.rng.integers(0, len(removable)))]
            gone = self.dependants(victim.instance)
            self.objects = [o for o in self.objects if o.instance not in gone]


def _rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


class _Local:
    """Places parts in an object's local frame (x right, y front, z up) at ``c`` and ``yaw``."""

    def __init__(self, c, yaw: float, b: MeshBuilder, cls: int, mat: int, inst: int) -> None:
        self.c, self.yaw, self.b, self.cls, self.mat, self.inst = c, yaw, b, cls, mat, inst
        self.rot = _rot(yaw)

    def _xy(self, x: float, y: float) -> np.ndarray:
        return np.asarray(self.c[:2]) + self.rot @ [x, y]

    def box(self, x, y, z, sx, sy, sz, mat: int | None = None) -> None:
        xy = self._xy(x, y)
        self.b.box(
            [xy[0], xy[1], z],
            [sx, sy, sz],
            self.yaw,
            self.cls,
            self.mat if mat is None else mat,
            self.inst,
        )

    def cylinder(self, x, y, z, r0, r1, h, mat: int | None = None) -> None:
        xy = self._xy(x, y)
        self.b.frustum(
            [xy[0], xy[1], z],
            r0,
            r1,
            h,
            self.cls,
            self.mat if mat is None else mat,
            self.inst,
            segments=12,
        )


def _box_builder(c, z, yaw, sx, sy, sz, mat, inst):
    def build(b: MeshBuilder) -> None:
        b.box([c[0], c[1], z + sz / 2], [sx, sy, sz], yaw, C.BOX, mat, inst)

    return build


def _ball_builder(c, z, r, mat, inst):
    def build(b: MeshBuilder) -> None:
        b.sphere([c[0], c[1], z + r], r, C.BALL, mat, inst)

    return build


def build_scene(rng: np.random.Generator) -> Scene:
    """Draw one furnished room from ``rng``."""
    rb = _RoomBuilder(rng)
    rb.build_structure()
    lights = rb.ceiling_lights()
    rb.furnish()
    clearance = rb.ensure_walkable()
    mb = MeshBuilder()
    for part in rb.structure:
        part(mb)
    for obj in rb.objects:
        if obj.build is not None:
            obj.build(mb)
    bank = rb.mats
    return Scene(
        size=(rb.X, rb.Y, rb.H),
        mesh=mb.build(),
        atlas=bank.atlas(),
        mat_scale=np.array(bank.scale, np.float32),
        mat_specular=np.array(bank.specular, np.float32),
        mat_emissive=np.array(bank.emissive, np.float32),
        mat_ir_dropout=np.array(bank.ir_dropout, np.float32),
        lights=lights,
        ambient=float(rng.uniform(0.18, 0.32)),
        exposure=float(rng.uniform(0.85, 1.15)),
        objects=rb.objects,
        clearance=clearance,
    )
