namespace Squeeze.Models;

/// <summary>Rotary embedding scaling as Hugging Face configs describe it and llama.cpp stores it.</summary>
public static class RopeScaling
{
    /// <summary>
    /// Llama 3's per-pair frequency divisors (<c>rope_scaling.rope_type</c> "llama3"), computed as llama.cpp's converter
    /// computes <c>rope_freqs.weight</c>: pair i has frequency f = 1 / θ^(2i / headDim) (in f32); wavelength 2π / f
    /// shorter than originalContext / highFrequencyFactor keeps f (divisor 1), longer than originalContext /
    /// lowFrequencyFactor divides it by <paramref name="factor"/>, and in between the divisor moves smoothly from one to
    /// the other: 1 / ((1 − s) / factor + s) with s = (originalContext / wavelength − low) / (high − low).
    /// </summary>
    public static float[] Llama3Factors(int headDim, float theta, double factor, double lowFrequencyFactor, double highFrequencyFactor, int originalContext)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 2);
        if (!(highFrequencyFactor > lowFrequencyFactor))
            throw new ArgumentException($"high_freq_factor {highFrequencyFactor} must exceed low_freq_factor {lowFrequencyFactor}");
        double lowWavelength = originalContext / lowFrequencyFactor;
        double highWavelength = originalContext / highFrequencyFactor;
        var factors = new float[headDim / 2];
        for (int i = 0; i < factors.Length; i++)
        {
            float frequency = 1f / MathF.Pow(theta, 2f * i / headDim);
            double wavelength = 2 * Math.PI / frequency;
            double divisor;
            if (wavelength < highWavelength)
                divisor = 1;
            else if (wavelength > lowWavelength)
                divisor = factor;
            else
            {
                double smooth = (originalContext / wavelength - lowFrequencyFactor) / (highFrequencyFactor - lowFrequencyFactor);
                divisor = 1 / ((1 - smooth) / factor + smooth);
            }
            factors[i] = (float)divisor;
        }
        return factors;
    }
}
