using TorchSharp;
using TorchSharp.Modules;

namespace RetriKT.MLNet.Common;

/// <summary>Optimizers shared by the pretrainers.</summary>
internal static class Optimizers
{
    /// <summary>AdamW whose weight decay applies to matrices (and embeddings) only, not to norms and biases.</summary>
    public static AdamW AdamWDecayingMatrices(IEnumerable<Parameter> parameters, double learningRate, double beta1, double beta2, double weightDecay)
    {
        var all = parameters.ToList();
        return torch.optim.AdamW(
            [new AdamW.ParamGroup(all.Where(p => p.dim() >= 2), new AdamW.Options { weight_decay = weightDecay }),
             new AdamW.ParamGroup(all.Where(p => p.dim() < 2), new AdamW.Options { weight_decay = 0 })],
            learningRate, beta1, beta2, 1e-8, weightDecay);
    }
}
