"""SSIM by plain loops, the reference the SSIM tests (tests/losses/test_ssim.py, tests/methods/test_skd.py) check
kdlab's separable implementation against: a NON-separable 2-D Gaussian window, 'reflect' borders, float64."""

import math

C1 = 0.01**2
C2 = 0.03**2


def reflect_index(index: int, size: int) -> int:
    """numpy/torch 'reflect' border: -1 -> 1, size -> size - 2."""
    if index < 0:
        return -index
    if index >= size:
        return 2 * (size - 1) - index
    return index


def reference_ssim_maps(x: list, y: list, taps: int, sigma: float):
    """SSIM, cs and s of two 2-D lists with a NON-separable 2-D Gaussian window and plain loops (float64)."""
    height, width, radius = len(x), len(x[0]), taps // 2
    g = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
    weights = [[a * b for b in g] for a in g]
    total = sum(map(sum, weights))
    weights = [[w / total for w in row] for row in weights]
    lcs, cs, s = [], [], []
    for i in range(height):
        row_lcs, row_cs, row_s = [], [], []
        for j in range(width):
            mx = my = mxx = myy = mxy = 0.0
            for di in range(taps):
                for dj in range(taps):
                    w = weights[di][dj]
                    u = reflect_index(i + di - radius, height)
                    v = reflect_index(j + dj - radius, width)
                    a, b = x[u][v], y[u][v]
                    mx += w * a
                    my += w * b
                    mxx += w * a * a
                    myy += w * b * b
                    mxy += w * a * b
            vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my
            lum = (2 * mx * my + C1) / (mx * mx + my * my + C1)
            contrast_structure = (2 * cov + C2) / (vx + vy + C2)
            structure = (cov + C2 / 2) / (math.sqrt(max(vx, 0.0)) * math.sqrt(max(vy, 0.0)) + C2 / 2)
            row_lcs.append(lum * contrast_structure)
            row_cs.append(contrast_structure)
            row_s.append(structure)
        lcs.append(row_lcs)
        cs.append(row_cs)
        s.append(row_s)
    return {"lcs": lcs, "cs": cs, "s": s}
