using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tuning;

/// <summary>
/// The continuous parameters of a compressed weight that tuning may move while its codes stay fixed: a uniform
/// weight's group scales and mins, a vector-quantized weight's codebook and row scales, the two halves of a row split.
/// <see cref="Values"/> are f32 masters; <see cref="Decode"/> uses them rounded to f16, as they will be stored, and
/// <see cref="Backward"/> passes the gradient straight through that rounding. <see cref="Build"/> makes the weight with
/// the tuned values: the same scheme, codes and stored size. Which weights are tunable is an open table keyed by weight
/// type (<see cref="Register"/>): this floor's own entries for the runtime's weights, and those a representation family
/// from above adds (<c>Compression.NativeRepresentation.Register</c>).
/// </summary>
public abstract class TunableWeight
{
    /// <summary>A tunable view of <paramref name="original"/>.</summary>
    protected TunableWeight(LinearWeight original) => Original = original;

    /// <summary>The weight as compressed (the values tuning starts from).</summary>
    public LinearWeight Original { get; }

    /// <summary>The parameters, f32.</summary>
    public abstract float[] Values { get; }

    /// <summary>Per parameter, the size of a unit step (tuning moves Values[i] by multiples of Units[i]: relative to a
    /// scale, to the codebook's spread …).</summary>
    public abstract float[] Units { get; }

    /// <summary>Writes the weight, [rows, columns], with the current values rounded to f16.</summary>
    public abstract void Decode(Span<float> dense);

    /// <summary>Adds d loss / d <see cref="Values"/> to <paramref name="gradient"/>, given d loss / d weight, [rows, columns].</summary>
    public abstract void Backward(ReadOnlySpan<float> denseGradient, Span<float> gradient);

    /// <summary>The weight with the current values, in the original's representation.</summary>
    public abstract LinearWeight Build();

    /// <summary>Tunes uniform weights: group scales and mins.</summary>
    public static TunableFactory Uniform { get; } = TunableFactory.For<UniformWeight>(u => new TunableUniform(u));

    /// <summary>Tunes vector-quantized weights: the codebook and the row scales.</summary>
    public static TunableFactory Vectors { get; } = TunableFactory.For<VectorCodebookWeight>(v => new TunableVectors(v));

    /// <summary>Tunes row splits: each half as its own representation allows (none when neither half is tunable).</summary>
    public static TunableFactory Split { get; } =
        TunableFactory.For<RowSplitWeight>(s => For(s.HotRows) is not null || For(s.ColdRows) is not null ? new TunableSplit(s) : null);

    private static readonly Lock Gate = new();
    private static Dictionary<Type, TunableFactory> factories = new[] { Uniform, Vectors, Split }.ToDictionary(f => f.WeightType);

    /// <summary>Makes weights of <see cref="TunableFactory.WeightType"/> tunable; registering the same factory again does nothing.</summary>
    /// <exception cref="ArgumentException">Another factory already tunes that weight type.</exception>
    public static void Register(TunableFactory factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        lock (Gate)
        {
            if (factories.TryGetValue(factory.WeightType, out var known))
            {
                if (ReferenceEquals(known, factory))
                    return;
                throw new ArgumentException($"{factory.WeightType.Name} is already tunable through another factory", nameof(factory));
            }
            Volatile.Write(ref factories, new Dictionary<Type, TunableFactory>(factories) { [factory.WeightType] = factory });
        }
    }

    /// <summary>A tunable view of <paramref name="weight"/> (by its exact type), or null when its representation has
    /// nothing tuning can move.</summary>
    public static TunableWeight? For(LinearWeight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return Volatile.Read(ref factories).TryGetValue(weight.GetType(), out var factory) ? factory.Create(weight) : null;
    }

    /// <summary><paramref name="value"/> as f16 stores it, back in f32.</summary>
    protected static float RoundToF16(float value) => HalfConversions.F16ToF32(ToF16(value));

    /// <summary><paramref name="value"/> in f16, clamped to its range.</summary>
    protected static ushort ToF16(float value) => HalfConversions.F32ToF16(Math.Clamp(value, -65504f, 65504f));

    /// <summary>Every value in f16, clamped to its range.</summary>
    protected static ushort[] ToF16(ReadOnlySpan<float> values)
    {
        var result = new ushort[values.Length];
        for (int i = 0; i < values.Length; i++)
            result[i] = ToF16(values[i]);
        return result;
    }

    /// <summary>f16 values in f32.</summary>
    protected static float[] ToF32(ReadOnlySpan<ushort> values)
    {
        var result = new float[values.Length];
        for (int i = 0; i < values.Length; i++)
            result[i] = HalfConversions.F16ToF32(values[i]);
        return result;
    }

    /// <summary>A uniform weight: w = scale · a + min per group, a the code (minus the zero point when symmetric).</summary>
    private sealed class TunableUniform : TunableWeight
    {
        private readonly UniformWeight weight;
        private readonly float[] codes; // [rows, columns] the codes as the decoder weighs them: q, or q − zero
        private readonly int groups, group, scaleCount;

        public TunableUniform(UniformWeight weight) : base(weight)
        {
            this.weight = weight;
            group = weight.UniformScheme.Group;
            groups = weight.Columns / group;
            scaleCount = weight.Rows * groups;
            // Decoding with unit scales and zero mins gives the codes themselves.
            var unit = new ushort[scaleCount];
            Array.Fill(unit, HalfConversions.F32ToF16(1f));
            codes = new UniformWeight(weight.Name, weight.Rows, weight.Columns, weight.UniformScheme, weight.Codes.ToArray(), unit,
                weight.UniformScheme.Symmetric ? null : new ushort[scaleCount]).Decode();
            Values = [.. ToF32(weight.Scales), .. ToF32(weight.Mins)];
            Units = new float[Values.Length];
            for (int i = 0; i < Values.Length; i++)
                Units[i] = Math.Abs(Values[i % scaleCount]);
        }

        public override float[] Values { get; }
        public override float[] Units { get; }

        public override void Decode(Span<float> dense)
        {
            bool symmetric = weight.UniformScheme.Symmetric;
            for (int k = 0; k < scaleCount; k++)
            {
                float scale = RoundToF16(Values[k]), min = symmetric ? 0f : RoundToF16(Values[scaleCount + k]);
                int at = k * group; // groups are consecutive within a row and rows consecutive: group k starts at k · group
                for (int c = at; c < at + group; c++)
                    dense[c] = scale * codes[c] + min;
            }
        }

        public override void Backward(ReadOnlySpan<float> denseGradient, Span<float> gradient)
        {
            bool symmetric = weight.UniformScheme.Symmetric;
            for (int k = 0; k < scaleCount; k++)
            {
                int at = k * group;
                double dScale = 0, dMin = 0;
                for (int c = at; c < at + group; c++)
                {
                    dScale += (double)denseGradient[c] * codes[c];
                    dMin += denseGradient[c];
                }
                gradient[k] += (float)dScale;
                if (!symmetric)
                    gradient[scaleCount + k] += (float)dMin;
            }
        }

        public override LinearWeight Build()
            => new UniformWeight(weight.Name, weight.Rows, weight.Columns, weight.UniformScheme, weight.Codes.ToArray(),
                ToF16(Values.AsSpan(0, scaleCount)), weight.UniformScheme.Symmetric ? null : ToF16(Values.AsSpan(scaleCount)));
    }

    /// <summary>A vector-quantized weight: w[r, v·d + j] = rowScale[r] · codebook[index[r, v], j].</summary>
    private sealed class TunableVectors : TunableWeight
    {
        private readonly VectorCodebookWeight weight;
        private readonly int codebookLength, dimension;

        public TunableVectors(VectorCodebookWeight weight) : base(weight)
        {
            this.weight = weight;
            dimension = weight.Dimension;
            codebookLength = weight.Codebook.Length;
            Values = [.. ToF32(weight.Codebook), .. ToF32(weight.Scales)];
            Units = new float[Values.Length];
            double spread = Math.Sqrt(Values.AsSpan(0, codebookLength).ToArray().Average(v => (double)v * v));
            Units.AsSpan(0, codebookLength).Fill((float)spread);
            for (int i = codebookLength; i < Values.Length; i++)
                Units[i] = Math.Abs(Values[i]);
        }

        public override float[] Values { get; }
        public override float[] Units { get; }

        /// <summary>The codebook as decoding uses it: the current values rounded to f16.</summary>
        private float[] Centroids()
        {
            var centroids = new float[codebookLength];
            for (int i = 0; i < codebookLength; i++)
                centroids[i] = RoundToF16(Values[i]);
            return centroids;
        }

        public override void Decode(Span<float> dense)
        {
            var centroids = Centroids();
            var indices = weight.Indices;
            int vectors = weight.VectorsPerRow;
            for (int r = 0; r < weight.Rows; r++)
            {
                float scale = weight.HasRowScales ? RoundToF16(Values[codebookLength + r]) : 1f;
                for (int v = 0; v < vectors; v++)
                {
                    var centroid = centroids.AsSpan(indices[r * vectors + v] * dimension, dimension);
                    var destination = dense.Slice((r * vectors + v) * dimension, dimension);
                    for (int j = 0; j < dimension; j++)
                        destination[j] = weight.HasRowScales ? scale * centroid[j] : centroid[j];
                }
            }
        }

        public override void Backward(ReadOnlySpan<float> denseGradient, Span<float> gradient)
        {
            var centroids = weight.HasRowScales ? Centroids() : null;
            var indices = weight.Indices;
            int vectors = weight.VectorsPerRow;
            for (int r = 0; r < weight.Rows; r++)
            {
                float scale = weight.HasRowScales ? RoundToF16(Values[codebookLength + r]) : 1f;
                double dScale = 0;
                for (int v = 0; v < vectors; v++)
                {
                    int centroid = indices[r * vectors + v] * dimension;
                    var g = denseGradient.Slice((r * vectors + v) * dimension, dimension);
                    for (int j = 0; j < dimension; j++)
                    {
                        gradient[centroid + j] += scale * g[j];
                        if (centroids is not null)
                            dScale += (double)g[j] * centroids[centroid + j];
                    }
                }
                if (weight.HasRowScales)
                    gradient[codebookLength + r] += (float)dScale;
            }
        }

        public override LinearWeight Build()
            => new VectorCodebookWeight(weight.Name, weight.Rows, weight.Columns, dimension, weight.IndexBits, ToF16(Values.AsSpan(0, codebookLength)),
                weight.Indices.ToArray(), weight.HasRowScales ? ToF16(Values.AsSpan(codebookLength)) : null);
    }

    /// <summary>A row split: the hot and the cold rows each tuned as their own representation allows (or kept).</summary>
    private sealed class TunableSplit : TunableWeight
    {
        private readonly RowSplitWeight weight;
        private readonly TunableWeight? hot, cold;
        private readonly float[] hotDense, coldDense; // the parts' rows, [part rows, columns]
        private readonly int[] hotRows, coldRows;      // logical row of each part row
        private readonly int hotCount;

        public TunableSplit(RowSplitWeight weight) : base(weight)
        {
            this.weight = weight;
            hot = For(weight.HotRows);
            cold = For(weight.ColdRows);
            var mask = weight.Hot.ToArray();
            hotRows = Enumerable.Range(0, weight.Rows).Where(r => mask[r]).ToArray();
            coldRows = Enumerable.Range(0, weight.Rows).Where(r => !mask[r]).ToArray();
            hotDense = weight.HotRows.Decode();
            coldDense = weight.ColdRows.Decode();
            hotCount = hot?.Values.Length ?? 0;
            Values = [.. hot?.Values ?? [], .. cold?.Values ?? []];
            Units = [.. hot?.Units ?? [], .. cold?.Units ?? []];
        }

        public override float[] Values { get; }
        public override float[] Units { get; }

        public override void Decode(Span<float> dense)
        {
            Decode(hot, Values.AsSpan(0, hotCount), hotDense, hotRows, dense);
            Decode(cold, Values.AsSpan(hotCount), coldDense, coldRows, dense);
        }

        private void Decode(TunableWeight? part, ReadOnlySpan<float> values, float[] partDense, int[] rows, Span<float> dense)
        {
            int columns = weight.Columns;
            if (part is not null)
            {
                values.CopyTo(part.Values);
                part.Decode(partDense);
            }
            for (int i = 0; i < rows.Length; i++)
                partDense.AsSpan(i * columns, columns).CopyTo(dense.Slice(rows[i] * columns, columns));
        }

        public override void Backward(ReadOnlySpan<float> denseGradient, Span<float> gradient)
        {
            Backward(hot, hotRows, denseGradient, gradient[..hotCount]);
            Backward(cold, coldRows, denseGradient, gradient[hotCount..]);
        }

        private void Backward(TunableWeight? part, int[] rows, ReadOnlySpan<float> denseGradient, Span<float> gradient)
        {
            if (part is null)
                return;
            int columns = weight.Columns;
            var gathered = new float[rows.Length * columns];
            for (int i = 0; i < rows.Length; i++)
                denseGradient.Slice(rows[i] * columns, columns).CopyTo(gathered.AsSpan(i * columns, columns));
            part.Backward(gathered, gradient);
        }

        public override LinearWeight Build()
        {
            if (hot is not null)
                Values.AsSpan(0, hotCount).CopyTo(hot.Values);
            if (cold is not null)
                Values.AsSpan(hotCount).CopyTo(cold.Values);
            return new RowSplitWeight(weight.Name, weight.Hot.ToArray(), hot?.Build() ?? weight.HotRows, cold?.Build() ?? weight.ColdRows);
        }
    }
}

/// <summary>How weights of one type (<see cref="WeightType"/>, matched exactly) become tunable: <see cref="Create"/>
/// returns the tunable view, or null when that weight has nothing to tune.</summary>
public sealed class TunableFactory
{
    private readonly Func<LinearWeight, TunableWeight?> create;

    private TunableFactory(Type weightType, Func<LinearWeight, TunableWeight?> create)
    {
        WeightType = weightType;
        this.create = create;
    }

    /// <summary>The weight type this factory tunes.</summary>
    public Type WeightType { get; }

    /// <summary>The tunable view of <paramref name="weight"/> (of <see cref="WeightType"/>), or null.</summary>
    public TunableWeight? Create(LinearWeight weight) => create(weight);

    /// <summary>A factory for weights of type <typeparamref name="TWeight"/>.</summary>
    public static TunableFactory For<TWeight>(Func<TWeight, TunableWeight?> create) where TWeight : LinearWeight
    {
        ArgumentNullException.ThrowIfNull(create);
        return new TunableFactory(typeof(TWeight), w => create((TWeight)w));
    }
}
