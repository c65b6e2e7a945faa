using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

// The student built on a frozen pretrained encoder (Options.Backbone). See docs/ENCODERS.md.
public sealed partial class RetrievalClassifierTrainer
{
    private static void CheckBackbone(Options options)
    {
        if (options.Backbone is null)
        {
            if (options.TrainableBackboneLayers != 0)
                throw new ArgumentOutOfRangeException(nameof(options), $"TrainableBackboneLayers is {options.TrainableBackboneLayers}, but no Backbone is set.");
            return;
        }
        var source = options.Backbone;
        if (string.IsNullOrWhiteSpace(source))
            throw new ArgumentOutOfRangeException(nameof(options), "Backbone is empty; give a SentenceTransformers.* package DLL or a Hugging Face BERT directory, or null for the tiny student.");
        if (!File.Exists(source) && !Directory.Exists(source))
            throw new ArgumentOutOfRangeException(nameof(options), $"Backbone '{source}' not found: expected a SentenceTransformers.* package DLL or a Hugging Face BERT directory.");
        if (options.VocabularyPath is not null)
            throw new ArgumentOutOfRangeException(nameof(options), $"VocabularyPath ('{options.VocabularyPath}') must be null with a Backbone: the backbone brings its own vocabulary.");
        if (options.Dropout is < 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(options), $"Dropout must be in [0, 1), found {options.Dropout}.");
        if (options.TrainableBackboneLayers < 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"TrainableBackboneLayers must be >= 0, found {options.TrainableBackboneLayers}.");
        if (!(options.BackboneLearningRate > 0))
            throw new ArgumentOutOfRangeException(nameof(options), $"BackboneLearningRate must be positive, found {options.BackboneLearningRate}.");
        if (options.MaxLength < 3)
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxLength must be at least 3 ([CLS], a token, [SEP]), found {options.MaxLength}.");
    }

    /// <summary>
    /// Trains a student on a frozen pretrained encoder: every distinct store text is embedded once (managed inference,
    /// the very computation the runtime repeats for a query), then only the projection, head and τ train on those
    /// embeddings, with the tiny student's objective and schedule.
    /// </summary>
    private RetrievalClassifierTransformer FitWithBackbone(KnowledgeStore store, List<Row>? validationRows, ComponentHost host)
    {
        var (backbone, vocabulary) = StudentBackbone.Load(_options.Backbone!);
        var shape = backbone.Config;
        if (_options.MaxLength > shape.MaxPositions)
            throw new ArgumentOutOfRangeException(nameof(Options.MaxLength), $"MaxLength {_options.MaxLength} exceeds the backbone's {shape.MaxPositions} positions ({backbone.Description}).");
        int trainable = _options.TrainableBackboneLayers;
        if (trainable > shape.NumLayers)
            throw new ArgumentOutOfRangeException(nameof(Options.TrainableBackboneLayers), $"TrainableBackboneLayers {trainable} exceeds the backbone's {shape.NumLayers} layers ({backbone.Description}).");
        var tokenizer = new TextTokenizingTransformer(_env, _options.TextColumnName, _options.SecondTextColumnName, "TokenIds", _options.MaxLength, vocabulary);
        int truncated = 0;
        var ids = store.Entries.Select(e => { var r = tokenizer.Encode(e.Text!, e.Text2, out bool t); if (t) truncated++; return r; }).ToList();
        if (truncated > 0) host.Warning($"{truncated} of {store.Count} store texts are longer than MaxLength = {_options.MaxLength} tokens and were truncated.");

        int d = backbone.Dimension, labels = store.LabelCount;
        var config = new StudentConfig(vocabulary.Count, d, Layers: 0, Heads: 1, FeedForwardSize: d, _options.MaxLength, StudentPooling.Mean, labels, _options.Dropout);
        long parameters = backbone.ParameterCount + BackboneStudentNetwork.TrainedParameterCount(d, labels);
        host.Info($"Student on a backbone: {backbone.Description} ({shape.NumLayers} layers, hidden {d}, {backbone.Pooling} pooling, " +
                  $"{(trainable == 0 ? "frozen" : $"top {trainable} fine-tuned")}); {parameters:N0} parameters" +
                  (_options.TeacherParameterCount is long teacher ? $" = {100.0 * parameters / teacher:G3}% of the teacher's {teacher:N0}." : "."));

        // The frozen part runs once per distinct text: the whole encoder, or the layers below the trainable ones.
        var features = new BackboneFeatures(backbone, shape.NumLayers - trainable);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var storeInputs = features.Get(ids, host);
        host.Info($"Backbone: {features.Count:N0} distinct store texts through its frozen {shape.NumLayers - trainable} layers in {clock.Elapsed.TotalSeconds:F0} s.");

        var device = host.ResolveDevice();
        var model = new BackboneHeadModel(d, labels, _options.Dropout, _options.InitialTemperature, shape, trainable, backbone.Pooling);
        try
        {
            using (var generator = new Generator((ulong)host.Seed)) model.Initialize(generator, backbone.Weights);
            model.to(device);
            bool retrieval = _options.UseRetrieval;
            var settings = new TrainingSettings(_options.Epochs, _options.BatchSize, _options.LearningRate, _options.WeightDecay,
                retrieval ? _options.RetrievalLossWeight : 0, _options.ContrastiveLossWeight, _options.ContrastiveTemperature,
                _options.NeighborCount, _options.LearnTemperature && retrieval, host.Seed);
            using var inputs = features.Inputs(storeInputs, device);
            BackboneTraining.Train(model, inputs, store.SoftLabels.ToArray(), labels, settings, _options.BackboneLearningRate, device, host);
            // As the tiny student's: a diverged run failed later, as "Entry 0: embedding has zero, NaN or infinite norm", naming no cause.
            RetrievalTraining.CheckFinite(model);

            float[] embeddings;
            using (var memory = inputs.EmbedAll(model, checkAlive: host.CheckAlive))
            using (var cpu = memory.cpu())
                embeddings = cpu.data<float>().ToArray();
            store = store.WithEmbeddings(embeddings, d);

            var lexical = TermMatchIndex(store, ids, vocabulary, host);
            Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> scorer = rows =>
            {
                model.eval();
                using var validation = features.Inputs(features.Get(rows, host), device);
                var pooled = validation.Encode(model, Enumerable.Range(0, rows.Count).Select(i => (long)i).ToArray());
                return (pooled, model.Head(pooled).softmax(-1));
            };
            var tuned = trainable == 0 ? backbone
                : new StudentBackbone(model.UpdatedBackbone(backbone.Weights), backbone.Pooling, $"{backbone.Description}, top {trainable} of {shape.NumLayers} layers fine-tuned", backbone.SepId, backbone.Segments);
            var validationIds = validationRows is null ? null : Tokenized(validationRows, store, tokenizer, host);
            return Finish(config, model.ToWeights(), tokenizer, store, validationIds, lexical, model.TemperatureValue, scorer, host, device, tuned);
        }
        finally
        {
            model.Dispose(); // the transformer holds the weights in managed memory
        }
    }
}

/// <summary>
/// The frozen part of a backbone applied to token rows, each distinct row computed once (rows in parallel), so the
/// store, the validation rows and any repeat cost one pass per distinct text: the unit-length embedding when the whole
/// encoder is frozen, else the token states after the first <paramref name="frozenLayers"/> layers.
/// </summary>
internal sealed class BackboneFeatures(StudentBackbone backbone, int frozenLayers)
{
    private readonly Dictionary<int[], float[]> _cache = new(new SequenceComparer());
    private bool Frozen => frozenLayers == backbone.Config.NumLayers;

    /// <summary>Distinct rows computed so far.</summary>
    public int Count => _cache.Count;

    /// <summary>Rows computed between two progress reports.</summary>
    internal const int ProgressBlock = 512;

    /// <summary>
    /// Per row, its embedding [D] (frozen encoder) or token states [t, H] (trainable top layers). Rows not computed before
    /// go through the backbone in blocks of <see cref="ProgressBlock"/>, each reported as stage "Backbone features": a store
    /// of tens of thousands of texts takes minutes on a CPU, and reported nothing until training's first epoch.
    /// </summary>
    public float[][] Get(IReadOnlyList<int[]> rows, ComponentHost host)
    {
        var missing = rows.Where(r => !_cache.ContainsKey(r)).Distinct(new SequenceComparer()).ToArray();
        var computed = new float[missing.Length][];
        for (int start = 0; start < missing.Length; start += ProgressBlock)
        {
            int end = Math.Min(start + ProgressBlock, missing.Length);
            Parallel.For(start, end, i =>
            {
                if ((i & 63) == 0) host.CheckAlive();
                if (Frozen)
                {
                    computed[i] = new float[backbone.Dimension];
                    backbone.Embed(missing[i], computed[i]);
                }
                else computed[i] = backbone.States(missing[i], frozenLayers);
            });
            host.Report("Backbone features", end, missing.Length);
        }
        for (int i = 0; i < missing.Length; i++) _cache[missing[i]] = computed[i];
        return rows.Select(r => _cache[r]).ToArray();
    }

    /// <summary>The model's inputs for <paramref name="values"/> (from <see cref="Get"/>), on <paramref name="device"/>.</summary>
    public BackboneInputs Inputs(float[][] values, TorchSharp.torch.Device device)
    {
        int d = backbone.Dimension;
        if (!Frozen) return BackboneInputs.States(values, d, device);
        var flat = new float[values.Length * d];
        for (int i = 0; i < values.Length; i++) values[i].CopyTo(flat, i * d);
        return BackboneInputs.Embeddings(flat, values.Length, d, device);
    }

    private sealed class SequenceComparer : IEqualityComparer<int[]>
    {
        public bool Equals(int[]? x, int[]? y) => x.AsSpan().SequenceEqual(y);
        public int GetHashCode(int[] ids)
        {
            var hash = new HashCode();
            foreach (var id in ids) hash.Add(id);
            return hash.ToHashCode();
        }
    }
}
