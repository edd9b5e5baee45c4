"""The model lab: the user's own networks loaded (loading), run on an image with every layer's
output, attention and deformable offsets captured (capture and its siblings), for the
"Model lab" operator. Imports functional, imaging and models; never operators or Qt."""
