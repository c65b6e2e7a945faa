
namespace RetriKT.MLNet.Encoders;

/// <summary>
/// The float32 weights of a BERT-family encoder under Hugging Face <c>BertModel</c> names without the model prefix
/// (<c>embeddings.*</c>, <c>encoder.layer.N.*</c>, optional <c>pooler.dense.*</c>), linear weights in torch layout
/// [out, in], with the <see cref="BertConfig"/> they imply. Every load checks that each tensor the config needs is
/// present exactly once with its shape; anything missing, misshapen or unexpected fails with the source and name.
/// </summary>
internal sealed partial class BertWeights
{
    private BertWeights(BertConfig config, Dictionary<string, (long[] Shape, float[] Data)> tensors, string source)
    {
        Config = config;
        Tensors = tensors;
        Source = source;
        HasPooler = tensors.ContainsKey("pooler.dense.weight");
        var expected = ExpectedShapes(config, HasPooler);
        foreach (var (name, shape) in expected)
        {
            if (!tensors.TryGetValue(name, out var t)) throw new InvalidDataException($"{source}: tensor '{name}' is missing (expected shape [{string.Join(",", shape)}]).");
            if (!t.Shape.SequenceEqual(shape))
                throw new InvalidDataException($"{source}: tensor '{name}' has shape [{string.Join(",", t.Shape)}], expected [{string.Join(",", shape)}].");
        }
        foreach (var name in tensors.Keys)
            if (!expected.ContainsKey(name)) throw new InvalidDataException($"{source}: unexpected tensor '{name}' for a {config.NumLayers}-layer BERT encoder.");
    }

    /// <summary>Weights already under their Hugging Face names (a saved student's backbone), checked against <paramref name="config"/>.</summary>
    public static BertWeights FromTensors(BertConfig config, Dictionary<string, (long[] Shape, float[] Data)> tensors, string source)
        => new(config.Validate(source), tensors, source);

    public BertConfig Config { get; }

    /// <summary>Name → (shape, row-major data).</summary>
    public IReadOnlyDictionary<string, (long[] Shape, float[] Data)> Tensors { get; }

    /// <summary>Where the weights came from (for errors).</summary>
    public string Source { get; }

    /// <summary>Whether the checkpoint has BERT's pooler (dense + tanh over [CLS]).</summary>
    public bool HasPooler { get; }

    /// <summary>
    /// Adds what these weights compute with <paramref name="pooling"/> to <paramref name="fingerprint"/>: the shape, the
    /// LayerNorm epsilon and every tensor but the pooler's (no sentence embedding reads it; a checkpoint with and one
    /// without it embed alike), in the config's tensor order.
    /// </summary>
    internal void AddTo(Common.ContentFingerprint fingerprint, BertPooling pooling)
    {
        var c = Config;
        foreach (int value in c.Shape()) fingerprint.Add(value);
        fingerprint.Add((long)pooling);
        fingerprint.Add(c.LayerNormEpsilon);
        foreach (var name in ExpectedShapes(c, pooler: false).Keys)
        {
            fingerprint.Add(name);
            fingerprint.Add(Tensors[name].Data);
        }
    }

    /// <summary>
    /// Writes the header a model.zip component keeps before the weights' part: whether there is a pooler, the shape and
    /// the LayerNorm epsilon (what <see cref="ReadPart"/> reads back).
    /// </summary>
    internal void WriteShape(BinaryWriter writer)
    {
        writer.Write(HasPooler);
        foreach (int value in Config.Shape()) writer.Write(value);
        writer.Write(Config.LayerNormEpsilon);
    }

    /// <summary>Writes the weights as a <see cref="Student.StudentWeights"/> state dictionary, in the config's tensor order (a model.zip part).</summary>
    internal void Write(BinaryWriter writer)
    {
        var names = ExpectedShapes(Config, HasPooler).Keys;
        new Student.StudentWeights(names.Select(n => new Student.NamedTensor(n, Tensors[n].Shape, Tensors[n].Data)).ToList()).Write(writer);
    }

    /// <summary>
    /// Reads the header <see cref="WriteShape"/> wrote from the component's main stream, then the weights
    /// <see cref="Write"/> wrote from the part <paramref name="partName"/>: every tensor is checked against the header's
    /// shape by name and shape, and errors name <paramref name="source"/>.
    /// </summary>
    internal static BertWeights ReadPart(Bridge.ModelReader r, string partName, string source)
    {
        var rd = r.Reader;
        bool hasPooler = rd.ReadBoolean();
        var shape = new int[new BertConfig().Shape().Length];
        for (int i = 0; i < shape.Length; i++) shape[i] = rd.ReadInt32();
        var config = BertConfig.FromShape(shape, rd.ReadDouble());
        BertWeights? weights = null;
        r.ReadStream(partName, s =>
        {
            var tensors = Student.StudentWeights.Read(s, source).Tensors.ToDictionary(t => t.Name, t => (t.Shape, t.Values), StringComparer.Ordinal);
            weights = FromTensors(config, tensors, source);
        });
        if (weights!.HasPooler != hasPooler)
            throw new InvalidDataException($"{source}: the header says the encoder {(hasPooler ? "has" : "has no")} pooler, the weights disagree.");
        return weights;
    }

    /// <summary>Every tensor name a BERT encoder of <paramref name="config"/> has, with its shape.</summary>
    public static Dictionary<string, long[]> ExpectedShapes(BertConfig config, bool pooler)
    {
        long h = config.HiddenSize, f = config.IntermediateSize;
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal)
        {
            ["embeddings.word_embeddings.weight"] = [config.VocabSize, h],
            ["embeddings.position_embeddings.weight"] = [config.MaxPositions, h],
            ["embeddings.token_type_embeddings.weight"] = [config.TypeVocabSize, h],
            ["embeddings.LayerNorm.weight"] = [h],
            ["embeddings.LayerNorm.bias"] = [h],
        };
        for (int i = 0; i < config.NumLayers; i++)
        {
            var p = $"encoder.layer.{i}.";
            foreach (var proj in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            {
                shapes[p + proj + ".weight"] = [h, h];
                shapes[p + proj + ".bias"] = [h];
            }
            shapes[p + "intermediate.dense.weight"] = [f, h];
            shapes[p + "intermediate.dense.bias"] = [f];
            shapes[p + "output.dense.weight"] = [h, f];
            shapes[p + "output.dense.bias"] = [h];
            foreach (var ln in new[] { "attention.output.LayerNorm", "output.LayerNorm" })
            {
                shapes[p + ln + ".weight"] = [h];
                shapes[p + ln + ".bias"] = [h];
            }
        }
        if (pooler)
        {
            shapes["pooler.dense.weight"] = [h, h];
            shapes["pooler.dense.bias"] = [h];
        }
        return shapes;
    }

    /// <summary>
    /// Reads a BERT encoder from an ONNX export (Hugging Face / optimum layout, weights inline). Biases and LayerNorm
    /// weights keep their HF names; the MatMul weights are anonymous, so each one is named after the bias of the Add
    /// that consumes the MatMul's output and transposed from ONNX's [in, out] to torch's [out, in]. A Gemm's weight is
    /// named the same way after its own bias input and transposed unless the Gemm has transB = 1. The number of heads
    /// is read from the graph where the attention splits its projections (<see cref="GraphHeads"/>); a
    /// <paramref name="numHeads"/> that disagrees fails naming both and <paramref name="numHeadsFrom"/>, and where the
    /// graph does not say, <paramref name="numHeads"/> (else 12, BERT-base's and MiniLM's) is taken. The LayerNorm
    /// epsilon is not in the graph's weights and comes from <paramref name="layerNormEpsilon"/>; everything else is read
    /// from the tensor shapes.
    /// </summary>
    public static BertWeights FromOnnx(ReadOnlyMemory<byte> model, int? numHeads, double layerNormEpsilon, string source, string numHeadsFrom = "OnnxNumHeads")
    {
        var graph = OnnxGraphReader.Parse(model, source);
        var tensors = new Dictionary<string, (long[] Shape, float[] Data)>(StringComparer.Ordinal);
        var firstConsumer = new Dictionary<string, OnnxNode>(StringComparer.Ordinal);
        var consumers = new Dictionary<string, List<OnnxNode>>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes)
            foreach (var input in node.Inputs)
            {
                firstConsumer.TryAdd(input, node); // first consumer of each value
                if (!consumers.TryGetValue(input, out var list)) consumers[input] = list = [];
                list.Add(node);
            }
        // The query, key and value projections (bias Add outputs) and their widths: where the heads are split.
        var projections = new List<(string Output, int Width)>();

        void Add(string name, long[] shape, float[] data)
        {
            if (!tensors.TryAdd(name, (shape, data))) throw new InvalidDataException($"{source}: two initializers map to '{name}'.");
        }

        foreach (var init in graph.Initializers.Values)
            if (IsEncoderName(init.Name)) Add(init.Name, init.Shape, init.Data);

        foreach (var node in graph.Nodes)
        {
            if (node.OpType == "MatMul" && node.Inputs.Length == 2 && graph.Initializers.TryGetValue(node.Inputs[1], out var w) && !IsEncoderName(w.Name))
            {
                if (!firstConsumer.TryGetValue(node.Outputs[0], out var add) || add.OpType != "Add")
                    throw new InvalidDataException($"{source}: MatMul weight '{w.Name}' is not followed by a bias Add, so it cannot be named.");
                var bias = add.Inputs.FirstOrDefault(i => i.EndsWith(".bias", StringComparison.Ordinal) && graph.Initializers.ContainsKey(i))
                    ?? throw new InvalidDataException($"{source}: the Add after MatMul weight '{w.Name}' has no named bias input ({string.Join(", ", add.Inputs)}).");
                Add(bias[..^".bias".Length] + ".weight", [w.Shape[1], w.Shape[0]], Transpose(w));
                if (AttentionProjection().IsMatch(bias)) projections.Add((add.Outputs[0], (int)w.Shape[1]));
            }
            else if (node.OpType == "Gemm" && node.Inputs.Length == 3 && graph.Initializers.TryGetValue(node.Inputs[1], out var g) && !IsEncoderName(g.Name))
            {
                var name = node.Inputs[2][..^".bias".Length] + ".weight";
                bool transposed = node.IntAttributes.GetValueOrDefault("transB") == 1;
                Add(name, transposed ? g.Shape : [g.Shape[1], g.Shape[0]], transposed ? g.Data : Transpose(g));
            }
        }
        int? fromGraph = GraphHeads(graph, consumers, projections, source);
        if (fromGraph is { } graphHeads && numHeads is { } given && graphHeads != given)
            throw new InvalidDataException($"{source}: the graph splits attention into {graphHeads} heads, but {numHeadsFrom} says {given}; leave it unset to take the graph's.");
        return new BertWeights(InferConfig(tensors, fromGraph ?? numHeads ?? 12, layerNormEpsilon, source), tensors, source);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.bias$")]
    private static partial System.Text.RegularExpressions.Regex AttentionProjection();

    /// <summary>
    /// The number of heads an ONNX BERT graph splits its attention into, or null where it does not say. A head count
    /// is not a weight: a torch export reshapes each query, key and value projection [batch, tokens, width] to
    /// [batch, tokens, heads, width / heads] before the per-head transpose, and the last two entries of that shape are
    /// constants, either one INT64 tensor or the tail of a Concat of a dynamic batch and length with constant heads
    /// and head size (torch 1.10 writes them as initializers, torch 2.x as Constant nodes; MiniLM and arctic-embed-xs
    /// are one of each). Only a reshape whose constants multiply back to the projection's width counts; projections
    /// that disagree fail, since no BERT mixes head counts. A graph that computes the shape some other way, or a fused
    /// attention operator, gives null.
    /// </summary>
    private static int? GraphHeads(OnnxGraphReader graph, Dictionary<string, List<OnnxNode>> consumers, List<(string Output, int Width)> projections, string source)
    {
        var producers = new Dictionary<string, OnnxNode>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes)
            foreach (var output in node.Outputs) producers.TryAdd(output, node);

        // The last two entries of a shape value when both are constants, else null.
        (long, long)? Tail(string shape)
        {
            if (graph.Int64Constant(shape) is { Length: >= 2 } whole) return (whole[^2], whole[^1]);
            if (!producers.TryGetValue(shape, out var concat) || concat.OpType != "Concat") return null;
            var tail = new List<long>();
            for (int i = concat.Inputs.Length - 1; i >= 0 && tail.Count < 2; i--)
            {
                if (graph.Int64Constant(concat.Inputs[i]) is not { } part) return null;
                tail.InsertRange(0, part);
            }
            return tail.Count >= 2 ? (tail[^2], tail[^1]) : null;
        }

        var found = new SortedSet<long>();
        foreach (var (output, width) in projections)
            foreach (var reshape in consumers.GetValueOrDefault(output) ?? [])
                if (reshape.OpType == "Reshape" && reshape.Inputs is [var data, var shape] && data == output
                    && Tail(shape) is (long heads, long headSize) && heads > 0 && headSize > 0 && heads * headSize == width)
                    found.Add(heads);
        return found.Count switch
        {
            0 => null,
            1 => (int)found.Min,
            _ => throw new InvalidDataException($"{source}: the attention projections are split into different numbers of heads ({string.Join(", ", found)})."),
        };
    }

    /// <summary>
    /// Reads a Hugging Face BERT directory: <c>config.json</c> and <c>model.safetensors</c> (F32, F16 or BF16; kept
    /// as float32), or else a <c>pytorch_model.bin</c> zip checkpoint (float32, read by a restricted unpickler). A
    /// <c>bert.</c> prefix is removed; heads of other tasks (<c>cls.*</c>, <c>classifier.*</c>) are skipped.
    /// </summary>
    public static BertWeights FromHuggingFaceDirectory(string directory)
    {
        var config = BertConfig.FromHuggingFaceJson(Path.Combine(directory, "config.json"));
        var (path, stored) = ReadCheckpoint(directory);
        var tensors = new Dictionary<string, (long[] Shape, float[] Data)>(StringComparer.Ordinal);
        foreach (var (storedName, tensor) in stored)
        {
            var name = storedName.StartsWith("bert.", StringComparison.Ordinal) ? storedName["bert.".Length..] : storedName;
            if (IsEncoderName(name) && !tensors.TryAdd(name, tensor))
                throw new InvalidDataException($"{path}: tensor '{name}' appears twice (with and without the 'bert.' prefix).");
        }
        return new BertWeights(config, tensors, path);
    }

    /// <summary>Every float tensor of the directory's checkpoint under its stored name (integer and bool buffers are skipped).</summary>
    internal static (string Path, Dictionary<string, (long[] Shape, float[] Data)> Tensors) ReadCheckpoint(string directory)
    {
        var safetensors = Path.Combine(directory, "model.safetensors");
        var pickle = Path.Combine(directory, "pytorch_model.bin");
        if (File.Exists(safetensors))
        {
            var tensors = new Dictionary<string, (long[] Shape, float[] Data)>(StringComparer.Ordinal);
            foreach (var (name, entry) in SafetensorsReader.ReadHeader(safetensors))
                // Integer buffers (position_ids) are skipped, as the pickle reader skips a LongStorage.
                if (!SafetensorsReader.IsIntegerOrBool(entry.DType)) tensors[name] = (entry.Shape, SafetensorsReader.ReadFloat32(entry));
            return (safetensors, tensors);
        }
        if (File.Exists(pickle)) return (pickle, PyTorchCheckpoint.ReadFloatTensors(pickle));
        throw new FileNotFoundException($"{directory}: no weights found (expected model.safetensors or pytorch_model.bin).", safetensors);
    }

    private static bool IsEncoderName(string name)
        => (name.StartsWith("embeddings.", StringComparison.Ordinal) && name != "embeddings.position_ids")
           || name.StartsWith("encoder.layer.", StringComparison.Ordinal) || name.StartsWith("pooler.", StringComparison.Ordinal);

    private static BertConfig InferConfig(Dictionary<string, (long[] Shape, float[] Data)> tensors, int numHeads, double eps, string source)
    {
        long[] Shape(string name) => tensors.TryGetValue(name, out var t) ? t.Shape : throw new InvalidDataException($"{source}: tensor '{name}' is missing.");
        var word = Shape("embeddings.word_embeddings.weight");
        int layers = 0;
        while (tensors.ContainsKey($"encoder.layer.{layers}.attention.self.query.bias")) layers++;
        return new BertConfig
        {
            VocabSize = (int)word[0], HiddenSize = (int)word[1], NumLayers = layers, NumHeads = numHeads,
            IntermediateSize = (int)Shape("encoder.layer.0.intermediate.dense.bias")[0],
            MaxPositions = (int)Shape("embeddings.position_embeddings.weight")[0],
            TypeVocabSize = (int)Shape("embeddings.token_type_embeddings.weight")[0], LayerNormEpsilon = eps,
        }.Validate(source);
    }

    private static float[] Transpose(OnnxTensor t)
    {
        if (t.Shape.Length != 2) throw new InvalidDataException($"ONNX weight '{t.Name}' has rank {t.Shape.Length}, expected 2.");
        int rows = (int)t.Shape[0], cols = (int)t.Shape[1];
        var result = new float[t.Data.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                result[c * rows + r] = t.Data[r * cols + c];
        return result;
    }
}
