using System.Runtime.InteropServices;
using System.Text;

namespace RetriKT.MLNet.Student;

/// <summary>One named float32 tensor of the student's state (row-major).</summary>
/// <param name="Name">Parameter name, for example <c>h.0.attn_qkv.weight</c>.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Values">Row-major values; length = product of <paramref name="Shape"/>.</param>
internal sealed record NamedTensor(string Name, long[] Shape, float[] Values);

/// <summary>
/// The student network's weights in managed memory, in the order the network lists them, read from and written to
/// the <c>Weights.bin</c> part of model.zip without TorchSharp. The format is TorchSharp's <c>Module.save</c> state
/// dictionary (so models written before the runtime/training split load unchanged): LEB128 entry count, then per
/// entry a length-prefixed UTF-8 name, LEB128 element type (6 = float32), LEB128 rank, LEB128 dimensions and the raw
/// little-endian values. Immutable after construction.
/// </summary>
internal sealed class StudentWeights
{
    private const long Float32 = 6; // TorchSharp ScalarType.Float32
    /// <summary>
    /// The training network's learned log τ. Not part of these weights: τ is stored once, as the transformer's number
    /// (it may be re-tuned after training). Models saved before held a second copy here; loading drops it.
    /// </summary>
    public const string TemperatureName = "log_temperature";
    private readonly Dictionary<string, NamedTensor> _byName;

    public StudentWeights(IReadOnlyList<NamedTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        Tensors = tensors;
        _byName = new Dictionary<string, NamedTensor>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            long count = t.Shape.Aggregate(1L, (a, d) => a * d);
            if (count != t.Values.Length)
                throw new InvalidDataException($"Student weight '{t.Name}': shape [{string.Join(", ", t.Shape)}] holds {count} values, found {t.Values.Length}.");
            if (!_byName.TryAdd(t.Name, t)) throw new InvalidDataException($"Student weights hold '{t.Name}' twice.");
        }
    }

    /// <summary>The tensors in file order.</summary>
    public IReadOnlyList<NamedTensor> Tensors { get; }

    /// <summary>These weights without the tensor <paramref name="name"/> (the same instance when there is none).</summary>
    public StudentWeights Without(string name)
        => _byName.ContainsKey(name) ? new StudentWeights(Tensors.Where(t => t.Name != name).ToList()) : this;

    /// <summary>The shape of <paramref name="name"/>, or null when these weights do not hold it.</summary>
    public long[]? ShapeOf(string name) => _byName.TryGetValue(name, out var t) ? t.Shape : null;

    /// <summary>The values of <paramref name="name"/> with the expected <paramref name="shape"/>; a clear error otherwise.</summary>
    public float[] Get(string name, params long[] shape)
    {
        if (!_byName.TryGetValue(name, out var t))
            throw new InvalidDataException($"Student weights lack parameter '{name}' (found {_byName.Count} parameters).");
        if (!t.Shape.AsSpan().SequenceEqual(shape))
            throw new InvalidDataException($"Student weight '{name}': expected shape [{string.Join(", ", shape)}], found [{string.Join(", ", t.Shape)}].");
        return t.Values;
    }

    /// <summary>Reads a TorchSharp state dictionary of float32 tensors; <paramref name="source"/> names the input in errors.</summary>
    public static StudentWeights Read(BinaryReader reader, string source)
    {
        ArgumentNullException.ThrowIfNull(reader);
        try
        {
            long count = reader.Read7BitEncodedInt64();
            if (count is < 0 or > 1_000_000) throw new InvalidDataException($"{source}: expected a parameter count in [0, 1000000], found {count}.");
            var tensors = new List<NamedTensor>((int)count);
            for (long i = 0; i < count; i++)
            {
                string name = reader.ReadString();
                long type = reader.Read7BitEncodedInt64();
                if (type != Float32) throw new InvalidDataException($"{source}: parameter '{name}' has element type {type}, expected {Float32} (float32).");
                long rank = reader.Read7BitEncodedInt64();
                if (rank is < 0 or > 8) throw new InvalidDataException($"{source}: parameter '{name}' has rank {rank}, expected 0..8.");
                var shape = new long[rank];
                long elements = 1;
                for (int d = 0; d < rank; d++)
                {
                    shape[d] = reader.Read7BitEncodedInt64();
                    elements *= shape[d];
                    if (shape[d] < 0 || elements > int.MaxValue / sizeof(float))
                        throw new InvalidDataException($"{source}: parameter '{name}' has an invalid shape [{string.Join(", ", shape.Take(d + 1))}].");
                }
                var values = new float[elements];
                var bytes = MemoryMarshal.AsBytes(values.AsSpan());
                reader.BaseStream.ReadExactly(bytes);
                if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Student weights are stored little-endian; this machine is big-endian.");
                tensors.Add(new NamedTensor(name, shape, values));
            }
            return new StudentWeights(tensors);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{source}: the student weights end early ({e.Message}).", e);
        }
    }

    /// <summary>Writes the weights in the format <see cref="Read"/> reads (byte-identical to TorchSharp's <c>Module.save</c>).</summary>
    public void Write(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write7BitEncodedInt64(Tensors.Count);
        foreach (var t in Tensors)
        {
            writer.Write(t.Name);
            writer.Write7BitEncodedInt64(Float32);
            writer.Write7BitEncodedInt64(t.Shape.Length);
            foreach (var d in t.Shape) writer.Write7BitEncodedInt64(d);
            writer.Write(MemoryMarshal.AsBytes(t.Values.AsSpan()));
        }
    }

    /// <summary>The weights as bytes (for handing them to a TorchSharp module on the training side).</summary>
    public byte[] ToBytes()
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true)) Write(writer);
        return buffer.ToArray();
    }
}
