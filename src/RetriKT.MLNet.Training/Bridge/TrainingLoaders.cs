using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;

// The training assembly's persisted components. Their ModelFormat names this assembly as the loader assembly, so
// ML.NET loads it by the name stored in model.zip and finds these registrations (same mechanism as the runtime's
// Bridge/Loaders.cs). Access checks into ML.NET are skipped as in the runtime (Bridge/README.md); the attribute type
// is the runtime's (internal, visible here).
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Core")]
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Data")]
[assembly: LoadableClass(typeof(SoftPromptTransformer), typeof(TrainingLoaders.SoftPrompt), null, typeof(SignatureLoadModel),
    "RetriKT Soft Prompt PPO", "RetriKTSoftPromptPpo")]
[assembly: LoadableClass(typeof(KnowledgeExtractorTransformer), typeof(TrainingLoaders.KnowledgeExtractor), null, typeof(SignatureLoadModel),
    "RetriKT Knowledge Extractor", "RetriKTKnowledgeExtract")]

namespace RetriKT.MLNet.Bridge;

/// <summary>Static factories ML.NET's component catalog calls to restore the training assembly's transformers.</summary>
internal static class TrainingLoaders
{
    internal static class SoftPrompt
    {
        private static SoftPromptTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
            => SoftPromptTransformer.Load(ModelReader.Open(env, ctx, SoftPromptTransformer.Format));
    }

    internal static class KnowledgeExtractor
    {
        private static KnowledgeExtractorTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
            => KnowledgeExtractorTransformer.Load(ModelReader.Open(env, ctx, KnowledgeExtractorTransformer.Format));
    }
}
