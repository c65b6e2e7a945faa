using System.Buffers.Binary;
using System.Text;

namespace RetriKT.MLNet.Encoders;

/// <summary>One float tensor from an ONNX graph's initializers, row-major.</summary>
internal sealed record OnnxTensor(string Name, long[] Shape, float[] Data);

/// <summary>
/// One node of an ONNX graph: its operator, input and output value names, its integer attributes, and the value of a
/// <c>Constant</c> node when that is an INT64 tensor (shape constants), else null.
/// </summary>
internal sealed record OnnxNode(string OpType, string[] Inputs, string[] Outputs, IReadOnlyDictionary<string, long> IntAttributes, long[]? Int64Value = null);

/// <summary>
/// The part of an ONNX <c>ModelProto</c> a weight loader needs: the graph's nodes, its FLOAT initializers and its
/// INT64 constants (initializers and <c>Constant</c> nodes: the shapes attention reshapes to, which hold the number of
/// heads); other element types are skipped. A small protobuf wire-format reader over the field numbers of onnx.proto
/// (ModelProto.graph = 7; GraphProto.node = 1, initializer = 5; NodeProto.input = 1, output = 2, op_type = 4,
/// attribute = 5; AttributeProto.name = 1, i = 3, t = 5; TensorProto.dims = 1, data_type = 2, float_data = 4,
/// int64_data = 7, name = 8, raw_data = 9, data_location = 14), so no protobuf runtime or generated code is needed.
/// Weights stored outside the file (external data) are rejected with the tensor's name.
/// </summary>
internal sealed class OnnxGraphReader
{
    private const int FloatType = 1, Int64Type = 7;

    private readonly Dictionary<string, long[]> _int64Constants;

    private OnnxGraphReader(List<OnnxNode> nodes, Dictionary<string, OnnxTensor> initializers, Dictionary<string, long[]> int64Constants)
    {
        Nodes = nodes;
        Initializers = initializers;
        _int64Constants = int64Constants;
    }

    /// <summary>
    /// The value of <paramref name="name"/> when it is an INT64 constant of the graph (an initializer, or the output of
    /// a <c>Constant</c> node), else null.
    /// </summary>
    public long[]? Int64Constant(string name) => _int64Constants.GetValueOrDefault(name);

    /// <summary>Nodes in graph order.</summary>
    public IReadOnlyList<OnnxNode> Nodes { get; }

    /// <summary>FLOAT initializers by name.</summary>
    public IReadOnlyDictionary<string, OnnxTensor> Initializers { get; }

    /// <summary>Parses a serialised ModelProto; <paramref name="source"/> names it in errors.</summary>
    public static OnnxGraphReader Parse(ReadOnlyMemory<byte> model, string source)
    {
        var nodes = new List<OnnxNode>();
        var initializers = new Dictionary<string, OnnxTensor>(StringComparer.Ordinal);
        var int64Constants = new Dictionary<string, long[]>(StringComparer.Ordinal);
        bool sawGraph = false;
        var reader = new WireReader(model, source);
        while (reader.Next(out int field, out int wire))
        {
            if (field == 7 && wire == 2)
            {
                sawGraph = true;
                var graph = new WireReader(reader.Bytes(), source);
                while (graph.Next(out int gField, out int gWire))
                {
                    if (gField == 1 && gWire == 2)
                    {
                        var node = ReadNode(graph.Bytes(), source);
                        nodes.Add(node);
                        if (node is { OpType: "Constant", Int64Value: { } value, Outputs: [var output] }) int64Constants[output] = value;
                    }
                    else if (gField == 5 && gWire == 2)
                    {
                        var proto = TensorProto.Read(graph.Bytes(), source);
                        if (proto.Floats(source) is { } t && !initializers.TryAdd(t.Name, t))
                            throw new InvalidDataException($"{source}: initializer '{t.Name}' appears twice.");
                        if (proto.Int64s(source) is { } value) int64Constants[proto.Name] = value;
                    }
                    else graph.Skip(gWire);
                }
            }
            else reader.Skip(wire);
        }
        if (!sawGraph) throw new InvalidDataException($"{source}: no graph found; this is not an ONNX model.");
        return new OnnxGraphReader(nodes, initializers, int64Constants);
    }

    private static OnnxNode ReadNode(ReadOnlyMemory<byte> bytes, string source)
    {
        var inputs = new List<string>();
        var outputs = new List<string>();
        var attributes = new Dictionary<string, long>(StringComparer.Ordinal);
        string op = "";
        long[]? int64Value = null;
        var r = new WireReader(bytes, source);
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, 2): inputs.Add(r.String()); break;
                case (2, 2): outputs.Add(r.String()); break;
                case (4, 2): op = r.String(); break;
                case (5, 2):
                    string name = "";
                    long? value = null;
                    long[]? tensor = null;
                    var a = new WireReader(r.Bytes(), source);
                    while (a.Next(out int aField, out int aWire))
                    {
                        if (aField == 1 && aWire == 2) name = a.String();
                        else if (aField == 3 && aWire == 0) value = (long)a.Varint();
                        else if (aField == 5 && aWire == 2) tensor = TensorProto.Read(a.Bytes(), source).Int64s(source);
                        else a.Skip(aWire);
                    }
                    if (value is { } v) attributes[name] = v;
                    if (name == "value") int64Value = tensor;
                    break;
                default: r.Skip(wire); break;
            }
        }
        return new OnnxNode(op, [.. inputs], [.. outputs], attributes, op == "Constant" ? int64Value : null);
    }

    /// <summary>
    /// The fields of an ONNX TensorProto this reader uses, read once whatever the element type; <see cref="Floats"/> and
    /// <see cref="Int64s"/> give its values when it is of their type (FLOAT weights; INT64 shape constants), else null.
    /// </summary>
    private sealed record TensorProto(string Name, List<long> Dims, int DataType, ReadOnlyMemory<byte> Raw, List<float>? FloatData,
        List<long> Int64Data, bool External)
    {
        public static TensorProto Read(ReadOnlyMemory<byte> bytes, string source)
        {
            var dims = new List<long>();
            var int64s = new List<long>();
            List<float>? floats = null;
            int dataType = 0;
            string name = "";
            ReadOnlyMemory<byte> raw = default;
            bool external = false;
            var r = new WireReader(bytes, source);
            while (r.Next(out int field, out int wire))
            {
                switch (field, wire)
                {
                    case (1, 0): dims.Add((long)r.Varint()); break;
                    case (1, 2):
                        var packedDims = new WireReader(r.Bytes(), source);
                        while (packedDims.HasMore) dims.Add((long)packedDims.Varint());
                        break;
                    case (2, 0): dataType = (int)r.Varint(); break;
                    case (4, 2):
                        var span = r.Bytes().Span;
                        floats ??= new List<float>(span.Length / 4);
                        for (int i = 0; i + 4 <= span.Length; i += 4) floats.Add(BinaryPrimitives.ReadSingleLittleEndian(span[i..]));
                        break;
                    case (4, 5): (floats ??= []).Add(BitConverter.Int32BitsToSingle((int)r.Fixed32())); break;
                    case (7, 0): int64s.Add((long)r.Varint()); break;
                    case (7, 2):
                        var packed = new WireReader(r.Bytes(), source);
                        while (packed.HasMore) int64s.Add((long)packed.Varint());
                        break;
                    case (8, 2): name = r.String(); break;
                    case (9, 2): raw = r.Bytes(); break;
                    case (14, 0): external = r.Varint() == 1; break;
                    default: r.Skip(wire); break;
                }
            }
            return new TensorProto(name, dims, dataType, raw, floats, int64s, external);
        }

        private long Count => Dims.Aggregate(1L, (a, b) => a * b);

        /// <summary>The tensor as FLOAT weights (raw_data or float_data), or null for another element type.</summary>
        public OnnxTensor? Floats(string source)
        {
            if (DataType != FloatType) return null;
            if (External) throw new NotSupportedException($"{source}: initializer '{Name}' is stored as external data; only inline weights are read.");
            long count = Count;
            float[] data;
            if (!Raw.IsEmpty)
            {
                if (Raw.Length != count * 4)
                    throw new InvalidDataException($"{source}: initializer '{Name}' has {Raw.Length} raw bytes, but shape [{string.Join(",", Dims)}] of FLOAT needs {count * 4}.");
                data = new float[count];
                Raw.Span.CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
                if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Big-endian hosts are not supported.");
            }
            else
            {
                data = FloatData?.ToArray() ?? [];
                if (data.Length != count)
                    throw new InvalidDataException($"{source}: initializer '{Name}' has {data.Length} float values, but shape [{string.Join(",", Dims)}] needs {count}.");
            }
            return new OnnxTensor(Name, [.. Dims], data);
        }

        /// <summary>
        /// The tensor's INT64 values (raw_data little-endian, or int64_data varints), or null for another element type. A
        /// value count that does not match the shape is refused naming the tensor.
        /// </summary>
        public long[]? Int64s(string source)
        {
            if (DataType != Int64Type) return null;
            var values = Int64Data;
            if (!Raw.IsEmpty)
            {
                if (Raw.Length % 8 != 0) throw new InvalidDataException($"{source}: INT64 tensor '{Name}' has {Raw.Length} raw bytes, not a multiple of 8.");
                values = [];
                for (int i = 0; i < Raw.Length; i += 8) values.Add(BinaryPrimitives.ReadInt64LittleEndian(Raw.Span[i..]));
            }
            if (values.Count != Count)
                throw new InvalidDataException($"{source}: INT64 tensor '{Name}' has {values.Count} values, but shape [{string.Join(",", Dims)}] needs {Count}.");
            return [.. values];
        }
    }

    /// <summary>Protobuf wire format: (field &lt;&lt; 3 | wire type) keys, varints, fixed 32/64, length-delimited bytes.</summary>
    private struct WireReader(ReadOnlyMemory<byte> buffer, string source)
    {
        private int _pos;

        public readonly bool HasMore => _pos < buffer.Length;

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (_pos >= buffer.Length) return false;
            ulong key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong value = 0;
            var span = buffer.Span;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= span.Length) throw Truncated();
                byte b = span[_pos++];
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return value;
            }
            throw new InvalidDataException($"{source}: malformed protobuf varint at byte {_pos}.");
        }

        public uint Fixed32()
        {
            if (_pos + 4 > buffer.Length) throw Truncated();
            uint v = BinaryPrimitives.ReadUInt32LittleEndian(buffer.Span[_pos..]);
            _pos += 4;
            return v;
        }

        public ReadOnlyMemory<byte> Bytes()
        {
            ulong length = Varint();
            if (length > (ulong)(buffer.Length - _pos)) throw Truncated();
            var slice = buffer.Slice(_pos, (int)length);
            _pos += (int)length;
            return slice;
        }

        public string String() => Encoding.UTF8.GetString(Bytes().Span);

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: if ((_pos += 8) > buffer.Length) throw Truncated(); break;
                case 2: Bytes(); break;
                case 5: if ((_pos += 4) > buffer.Length) throw Truncated(); break;
                default: throw new InvalidDataException($"{source}: unsupported protobuf wire type {wire} at byte {_pos}; the file is corrupt or not ONNX.");
            }
        }

        private readonly InvalidDataException Truncated() => new($"{source}: protobuf data ends inside a field at byte {_pos} of {buffer.Length}; the model is truncated.");
    }
}
