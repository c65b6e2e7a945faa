using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>
/// The cached inputs of a <see cref="BackboneHeadModel"/>, one per store entry: the frozen backbone's unit-length
/// embeddings ([N, D], on the device), or, when top layers train, each text's token states entering the first
/// trainable layer (row-major [t, H] on the CPU, padded per batch).
/// </summary>
internal sealed class BackboneInputs : IDisposable
{
    private readonly Tensor? _features;
    private readonly IReadOnlyList<float[]>? _states;
    private readonly int _hidden;
    private readonly Device _device;

    private BackboneInputs(Tensor? features, IReadOnlyList<float[]>? states, int count, int hidden, Device device)
    {
        _features = features;
        _states = states;
        Count = count;
        _hidden = hidden;
        _device = device;
    }

    /// <summary>Frozen backbone: row-major [rows, D] embeddings.</summary>
    public static BackboneInputs Embeddings(float[] values, int rows, int dimension, Device device)
        => new(torch.tensor(values, [rows, dimension], device: device), null, rows, dimension, device);

    /// <summary>Trainable top layers: per row, the [t, H] token states entering them.</summary>
    public static BackboneInputs States(IReadOnlyList<float[]> states, int hidden, Device device) => new(null, states, states.Count, hidden, device);

    public int Count { get; }

    /// <summary>[B, D] pooled embeddings (not normalised) of <paramref name="rows"/>, in the model's current mode.</summary>
    public Tensor Encode(BackboneHeadModel model, long[] rows)
    {
        // A scope for the selected rows as for the token states below: EmbedAll has none of its own, and a using on the
        // index alone left index_select's copy of the whole store's embeddings to the finalizer at every epoch.
        using var scope = torch.NewDisposeScope();
        if (_features is not null)
        {
            var index = torch.tensor(rows, device: _device);
            return model.Encode(_features.index_select(0, index)).MoveToOuterDisposeScope();
        }
        int b = rows.Length, t = rows.Max(r => _states![(int)r].Length / _hidden), h = _hidden;
        var states = new float[b * t * h];
        var mask = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            var row = _states![(int)rows[i]];
            row.CopyTo(states, i * t * h);
            mask.AsSpan(i * t, row.Length / h).Fill(1);
        }
        var pooled = model.Encode(torch.tensor(states, [b, t, h], device: _device), torch.tensor(mask, [b, t], device: _device));
        return pooled.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// L2-normalised pooled embeddings [N, D] of all rows in eval mode, without gradient (the retrieval memory).
    /// <paramref name="checkAlive"/> runs before each batch, so a cancelled training stops inside the pass.
    /// </summary>
    public Tensor EmbedAll(BackboneHeadModel model, int batchSize = 256, Action? checkAlive = null)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            var parts = new List<Tensor>();
            if (_features is not null) batchSize = Count; // embeddings: one product over the whole store
            try
            {
                for (int start = 0; start < Count; start += batchSize)
                {
                    checkAlive?.Invoke();
                    var rows = Enumerable.Range(start, Math.Min(batchSize, Count - start)).Select(i => (long)i).ToArray();
                    using var pooled = Encode(model, rows);
                    parts.Add(nn.functional.normalize(pooled, p: 2, dim: 1));
                }
                return torch.cat(parts, 0);
            }
            finally
            {
                foreach (var p in parts) p.Dispose();
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    public void Dispose() => _features?.Dispose();
}

/// <summary>
/// Training of a <see cref="BackboneHeadModel"/> on cached inputs with the tiny student's objective
/// (<see cref="RetrievalTraining"/>): loss = KL(t ‖ p_head) + α·KL(t ‖ p_knn) + β·InfoNCE(two dropout views), the
/// retrieval memory re-embedded every epoch, a query never retrieving itself, AdamW with linear decay to 10 %.
/// Trainable backbone layers get their own optimizer at the backbone learning rate, on the same schedule.
/// </summary>
internal static class BackboneTraining
{
    public static void Train(BackboneHeadModel model, BackboneInputs inputs, float[] softLabelValues, int labels, TrainingSettings settings,
        double backboneLearningRate, Device device, ComponentHost host)
    {
        int n = inputs.Count;
        var random = new Random(settings.Seed);
        using var generator = new Generator((ulong)settings.Seed);
        model.DropoutGenerator = generator;
        var temperature = model.get_parameter(StudentWeights.TemperatureName)!;
        var layerParameters = model.LayerParameters.ToList();
        try
        {
            var parameters = model.named_parameters()
                .Where(p => (settings.LearnTemperature || p.name != StudentWeights.TemperatureName) && !p.name.StartsWith("layer.", StringComparison.Ordinal))
                .Select(p => p.parameter).ToList();
            if (!settings.LearnTemperature) temperature.requires_grad = false;
            using var optimizer = new HeldAdamW(parameters, settings.LearningRate, settings.WeightDecay);
            using var layerOptimizer = layerParameters.Count > 0 ? new HeldAdamW(layerParameters, backboneLearningRate, settings.WeightDecay) : null;
            using var softLabels = torch.tensor(softLabelValues, [n, labels], device: device);
            int stepsPerEpoch = (n + settings.BatchSize - 1) / settings.BatchSize;
            long totalSteps = (long)stepsPerEpoch * settings.Epochs, step = 0;
            bool retrieval = settings.RetrievalLossWeight > 0 && n > 1;
            int k = Math.Min(settings.NeighborCount, n - 1);
            var order = Enumerable.Range(0, n).ToArray();
            for (int epoch = 1; epoch <= settings.Epochs; epoch++)
            {
                host.CheckAlive();
                using var memory = retrieval ? inputs.EmbedAll(model, checkAlive: host.CheckAlive) : null;
                model.train();
                random.Shuffle(order);
                var sums = new LossSums();
                for (int start = 0; start < n; start += settings.BatchSize)
                {
                    host.CheckAlive(); // every batch: a pretrained backbone's epoch takes minutes
                    using var scope = torch.NewDisposeScope();
                    var batch = order.AsSpan(start, Math.Min(settings.BatchSize, n - start)).ToArray();
                    var rows = batch.Select(i => (long)i).ToArray();
                    var pooled = inputs.Encode(model, rows);
                    var loss = RetrievalTraining.BatchLoss(pooled, model.Head(pooled), () => inputs.Encode(model, rows), batch, softLabels,
                        memory, k, model.Temperature(), settings, device, sums);
                    RetrievalTraining.Step(loss, layerOptimizer is null ? [(optimizer, settings.LearningRate)] : [(optimizer, settings.LearningRate), (layerOptimizer, backboneLearningRate)],
                        parameters.Concat(layerParameters), step++, totalSteps);
                }
                sums.Report(host, epoch, settings.Epochs, settings, stepsPerEpoch, model.TemperatureValue);
            }
        }
        finally
        {
            model.DropoutGenerator = null;
            temperature.requires_grad = true;
            model.eval();
        }
    }
}
