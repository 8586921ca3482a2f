namespace Squeeze.Quantization;

// llama.cpp's scale searches (ggml-quants.c: make_qx_quants, make_q3_quants, make_qkx2_quants, make_qkx3_quants,
// make_qp_quants), rewritten with the same f32 operations in the same order so that the results match bit for bit.
public static partial class Quantize
{
    private const float GroupMaxEps = 1e-15f;

    // Symmetric codes L[i] in [0, 2*nmax) for x ≈ scale * (L[i] - nmax); returns scale. weights empty: rmseType picks
    // the weighting (1: x², 2: 1, 3: |x|, else sqrt|x|); rmseType 0: no search.
    private static float MakeQxQuants(int nmax, ReadOnlySpan<float> x, Span<sbyte> L, int rmseType, ReadOnlySpan<float> weights)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            L[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        if (rmseType == 0)
        {
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * x[i]);
                L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
            }
            return 1 / iscale;
        }
        bool returnEarly = false;
        if (rmseType < 0)
        {
            rmseType = -rmseType;
            returnEarly = true;
        }
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * x[i]);
            l = Math.Max(-nmax, Math.Min(nmax - 1, l));
            L[i] = (sbyte)(l + nmax);
            float w = QxWeight(x[i], i, rmseType, weights);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
        if (returnEarly)
            return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
        float best = scale * sumlx;
        if (UseVectors)
            return MakeQxQuantsLanes(nmax, x, L, rmseType, weights, max, scale, best);
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0)
                continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * x[i]);
                l = Math.Max(-nmax, Math.Min(nmax - 1, l));
                float w = QxWeight(x[i], i, rmseType, weights);
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                {
                    int l = NearestInt(iscale * x[i]);
                    L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    private static float QxWeight(float x, int i, int rmseType, ReadOnlySpan<float> weights)
        => !weights.IsEmpty ? weights[i] : rmseType == 1 ? x * x : rmseType == 2 ? 1 : rmseType == 3 ? MathF.Abs(x) : MathF.Sqrt(MathF.Abs(x));

    // Q3_K's search: codes in [0, 2*nmax) for x ≈ scale * (L - nmax), weighted by x², with per-value refinement.
    private static float MakeQ3Quants(int nmax, ReadOnlySpan<float> x, Span<sbyte> L, bool doRmse)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            L[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        if (doRmse)
        {
            float sumlx = 0, suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * x[i]);
                l = Math.Max(-nmax, Math.Min(nmax - 1, l));
                L[i] = (sbyte)l;
                float w = x[i] * x[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            for (int itry = 0; itry < 5; itry++)
            {
                int changed = 0;
                for (int i = 0; i < n; i++)
                {
                    float w = x[i] * x[i];
                    float slx = sumlx - w * x[i] * L[i];
                    if (slx > 0)
                    {
                        float sl2 = suml2 - w * L[i] * L[i];
                        int newL = NearestInt(x[i] * sl2 / slx);
                        newL = Math.Max(-nmax, Math.Min(nmax - 1, newL));
                        if (newL != L[i])
                        {
                            slx += w * x[i] * newL;
                            sl2 += w * newL * newL;
                            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2)
                            {
                                L[i] = (sbyte)newL;
                                sumlx = slx;
                                suml2 = sl2;
                                changed++;
                            }
                        }
                    }
                }
                if (changed == 0)
                    break;
            }
            for (int i = 0; i < n; i++)
                L[i] += (sbyte)nmax;
            return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
        }
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * x[i]);
            l = Math.Max(-nmax, Math.Min(nmax - 1, l));
            L[i] = (sbyte)(l + nmax);
        }
        return 1 / iscale;
    }

    // Asymmetric codes L in [0, nmax] for x ≈ scale * L - theMin; weighted least squares over nstep+1 candidate scales.
    // make_qkx2_quants (weights required) and make_qkx3_quants differ only in the clamping of the trial codes, which
    // gives identical codes, so one routine serves both.
    private static float MakeQkxQuants(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> L, out float theMin,
        Span<byte> Laux, float rmin, float rdelta, int nstep, bool useMad)
    {
        int n = x.Length;
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0)
            min = 0;
        if (max == min)
        {
            L[..n].Clear();
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            L[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = scale * L[i] + min - x[i];
            diff = useMad ? MathF.Abs(diff) : diff * diff;
            bestError += weights[i] * diff;
        }
        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }
        if (UseVectors)
            return MakeQkxQuantsLanes(nmax, x, weights, L, out theMin, rmin, rdelta, nstep, useMad, min, max, sumW, sumX, bestError, scale);
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * (x[i] - min));
                l = Math.Max(0, Math.Min(nmax, l));
                Laux[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float D = sumW * sumL2 - sumL * sumL;
            if (D > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / D;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / D;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * Laux[i] + thisMin - x[i];
                    diff = useMad ? MathF.Abs(diff) : diff * diff;
                    curError += weights[i] * diff;
                }
                if (curError < bestError)
                {
                    Laux[..n].CopyTo(L);
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    // Non-negative codes L in [0, nmax] for x ≈ scale * L (x ≥ 0: the sub-block scales and mins of a super-block).
    private static float MakeQpQuants(int nmax, ReadOnlySpan<float> x, Span<byte> L, ReadOnlySpan<float> quantWeights)
    {
        int n = x.Length;
        float max = 0;
        for (int i = 0; i < n; i++)
            max = Math.Max(max, x[i]);
        if (max < GroupMaxEps)
        {
            L[..n].Clear();
            return 0f;
        }
        float iscale = nmax / max;
        for (int i = 0; i < n; i++)
            L[i] = (byte)NearestInt(iscale * x[i]);
        float scale = 1 / iscale;
        float bestMse = 0;
        for (int i = 0; i < n; i++)
        {
            float diff = x[i] - scale * L[i];
            bestMse += quantWeights[i] * diff * diff;
        }
        for (int step = -4; step <= 4; step++)
        {
            if (step == 0)
                continue;
            float iscaleIs = (0.1f * step + nmax) / max;
            float scaleIs = 1 / iscaleIs;
            float mse = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Min(nmax, NearestInt(iscaleIs * x[i]));
                float diff = x[i] - scaleIs * l;
                mse += quantWeights[i] * diff * diff;
            }
            if (mse < bestMse)
            {
                bestMse = mse;
                iscale = iscaleIs;
            }
        }
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Min(nmax, NearestInt(iscale * x[i]));
            L[i] = (byte)l;
            float w = quantWeights[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        for (int itry = 0; itry < 5; itry++)
        {
            int changed = 0;
            for (int i = 0; i < n; i++)
            {
                float w = quantWeights[i];
                float slx = sumlx - w * x[i] * L[i];
                float sl2 = suml2 - w * L[i] * L[i];
                if (slx > 0 && sl2 > 0)
                {
                    int newL = Math.Min(nmax, NearestInt(x[i] * sl2 / slx));
                    if (newL != L[i])
                    {
                        slx += w * x[i] * newL;
                        sl2 += w * newL * newL;
                        if (slx * slx * suml2 > sumlx * sumlx * sl2)
                        {
                            L[i] = (byte)newL;
                            sumlx = slx;
                            suml2 = sl2;
                            changed++;
                        }
                    }
                }
            }
            if (changed == 0)
                break;
        }
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
}
